-- wrk script: POST /todo with a JSON body (used by bench/todo-api.sh).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title":"benchmark item","content":"written by bench/todo-api.sh"}'
