// Entry point of a worker process (cluster.setupPrimary's `exec`).
import { runWorker } from './worker.js';

runWorker();
