// ioredis (npm) against slotproxy: commands, pipeline, MULTI, BLPOP,
// pub/sub. Run by tests/session.rs with the proxy port.
const Redis = require("ioredis");

const port = Number(process.argv[2]);
const fail = (msg) => { console.error("FAIL:", msg); process.exit(1); };
const eq = (a, b, what) => {
  if (JSON.stringify(a) !== JSON.stringify(b)) fail(`${what}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`);
};

(async () => {
  const r = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0 });
  await r.connect();
  eq(await r.set("node:a", "1"), "OK", "SET");
  eq(await r.get("node:a"), "1", "GET");
  eq(await r.hset("node:h", "f", "v"), 1, "HSET");
  eq(await r.hgetall("node:h"), { f: "v" }, "HGETALL");
  eq(await r.mget("node:a", "node:missing", "{x}1"), ["1", null, null], "MGET across slots");
  const pipe = r.pipeline();
  for (let i = 0; i < 100; i++) pipe.set(`node:p:${i}`, i);
  for (let i = 0; i < 100; i++) pipe.get(`node:p:${i}`);
  const res = await pipe.exec();
  for (let i = 0; i < 100; i++) eq(res[100 + i][1], String(i), `pipeline GET ${i}`);
  eq(await r.multi().set("{t}a", "1").incr("{t}a").exec(), [[null, "OK"], [null, 2]], "MULTI/EXEC");

  const other = new Redis({ port });
  setTimeout(() => other.rpush("node:bl", "v"), 300);
  eq(await r.blpop("node:bl", 5), ["node:bl", "v"], "BLPOP");

  const sub = new Redis({ port });
  const got = new Promise((resolve) => sub.on("message", (ch, msg) => resolve([ch, msg])));
  await sub.subscribe("node:news");
  await other.publish("node:news", "hello");
  eq(await got, ["node:news", "hello"], "pub/sub");

  for (const c of [r, other, sub]) c.disconnect();
  console.log("ioredis OK");
})().catch((e) => fail(e.stack || String(e)));
