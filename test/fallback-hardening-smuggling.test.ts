// test/hardening-smuggling.test.ts again with every Node-internal fallback forced (LB_NODE_FALLBACK=all): the pure-JS HTTP
// parser and net.Socket tcp listeners, in this process and in every lb it spawns (startLb passes the
// environment on, and checks that lb reports the fallbacks in use).
process.env.LB_NODE_FALLBACK = 'all';
await import('./hardening-smuggling.test.js');
