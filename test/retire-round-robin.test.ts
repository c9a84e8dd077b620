// test/retire.test.ts again with daemon.accept = "round-robin" (the primary accepts and hands connections
// to workers), in a file of its own so that each stays well inside tap's per-file time limit.
process.env.LB_RETIRE_ACCEPT = 'round-robin';
await import('./retire.test.js');
