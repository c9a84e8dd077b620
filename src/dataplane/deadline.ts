// A timer re-armed by refresh() (no new Timeout per request or per read), re-created only when its duration
// changed (a reload), so that long-lived connections take a new duration at their next wait. Unref'd: a
// pending deadline never keeps the process alive by itself. 0 ms: never fires.

export class Deadline {
  private timer: NodeJS.Timeout | undefined;
  private ms = 0;

  constructor(private readonly fire: () => void) {}

  arm(ms: number): void {
    if (this.timer && ms === this.ms) {
      this.timer.refresh();
      return;
    }
    clearTimeout(this.timer);
    this.ms = ms;
    this.timer = ms > 0 ? setTimeout(this.fire, ms).unref() : undefined;
  }

  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
