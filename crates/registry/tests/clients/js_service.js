// A Node service registered through eureka-js-client, which also looks up TODO-API.
//
//     node js_service.js REGISTRY_PORT PORT
//
// Prints `registered`, then on every registry fetch a JSON line with the TODO-API instances it
// found; on SIGTERM it deregisters, prints `deregistered` and exits.
const { Eureka } = require("eureka-js-client");

const [registryPort, port] = process.argv.slice(2).map(Number);
const client = new Eureka({
  instance: {
    app: "js-service",
    instanceId: `127.0.0.1:js-service:${port}`,
    hostName: "127.0.0.1",
    ipAddr: "127.0.0.1",
    port: { $: port, "@enabled": true },
    vipAddress: "js-service",
    statusPageUrl: `http://127.0.0.1:${port}/`,
    dataCenterInfo: {
      "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
      name: "MyOwn",
    },
  },
  // The default servicePath, /eureka/v2/apps/.
  eureka: {
    host: "127.0.0.1",
    port: registryPort,
    heartbeatInterval: 1000,
    registryFetchInterval: 500,
    maxRetries: 2,
    requestRetryDelay: 200,
  },
});
client.logger.level("warn");
client.on("registered", () => console.log("registered"));
client.on("registryUpdated", () => {
  const found = client.getInstancesByAppId("TODO-API");
  console.log(JSON.stringify({ todo: found.map((i) => `${i.ipAddr}:${i.port.$}`) }));
});
client.start((error) => {
  if (error) {
    console.error(`cannot start: ${error}`);
    process.exit(1);
  }
});
process.on("SIGTERM", () =>
  client.stop(() => {
    console.log("deregistered");
    process.exit(0);
  }),
);
