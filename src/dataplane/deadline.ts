// A timeout re-armed on a hot path (per request, per read) without touching Node's timer lists each time:
// arm() only records when the wait now ends. The one Timeout stays scheduled for the moment it was set for;
// when it fires before the recorded end (the wait was re-armed since), it waits for the rest, once. So a
// connection re-arming at every request costs a clock read per request, and the timer lists see one
// insertion per timeout period rather than one per request. It never fires early: `fire` runs only once
// the last arm()'s full duration has passed without another arm() or clear().
// A new duration (a reload) replaces the Timeout at once. Unref'd: a pending deadline never keeps the
// process alive by itself. 0 ms: never fires.

export class Deadline {
  private timer: NodeJS.Timeout | undefined;
  /** The duration the last arm() asked for. */
  private ms = 0;
  /** The duration `timer` was created with (refresh() waits this long again). */
  private timerMs = 0;
  /** When the wait ends (performance.now()). */
  private due = 0;
  /** `timer` is scheduled and has not fired. */
  private pending = false;

  constructor(private readonly fire: () => void) {}

  /** Starts (or restarts) the wait; `now` is performance.now(), when the caller has just read it. */
  arm(ms: number, now?: number): void {
    if (ms <= 0) {
      this.clear();
      this.ms = ms;
      return;
    }
    this.due = (now ?? performance.now()) + ms;
    if (ms === this.ms) {
      // Scheduled with this duration (or the rest of it) no later than now: it fires at or before `due`.
      if (this.pending) return;
      if (this.timer && this.timerMs === ms) {
        this.timer.refresh();
        this.pending = true;
        return;
      }
    }
    this.ms = ms;
    this.schedule(ms);
  }

  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = false;
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    this.timerMs = ms;
    this.pending = true;
    this.timer = setTimeout(this.onTimer, ms).unref();
  }

  private readonly onTimer = (): void => {
    this.pending = false;
    // Node's timers run on the event loop's cached millisecond clock: what is left may be under 1 ms.
    const left = this.due - performance.now();
    if (left > 0) this.schedule(Math.ceil(left));
    else this.fire();
  };
}
