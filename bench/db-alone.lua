-- sysbench script: the database alone running one statement per event, for bench/todo-api.sh.
-- SB_QUERY is the statement; a %d in it becomes an id from 1 to 100, a new one each event.
local query = os.getenv("SB_QUERY")

function thread_init()
  drv = sysbench.sql.driver()
  con = drv:connect()
end

function event()
  if string.find(query, "%%d") then
    con:query(string.format(query, sysbench.rand.uniform(1, 100)))
  else
    con:query(query)
  end
end

function thread_done()
  con:disconnect()
end
