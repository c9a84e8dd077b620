// test/proxy-protocol.test.ts and test/proxy-protocol-send.test.ts again with every Node-internal fallback
// forced (LB_NODE_FALLBACK=all): after the PROXY header, the pure-JS HTTP parser is fed from the socket's
// stream instead of reading the handle, and tcp listeners with send_proxy splice net.Sockets.
process.env.LB_NODE_FALLBACK = 'all';
await import('./proxy-protocol.test.js');
await import('./proxy-protocol-send.test.js');
