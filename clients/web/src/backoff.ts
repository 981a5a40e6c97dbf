/**
 * When to reconnect: a plain function of the server's `retry:` hint, how many attempts in a row
 * have failed, a random number the caller draws, and the server's `Retry-After`.
 *
 * A stream that was open and ended reconnects after the `retry:` time, as WHATWG `EventSource`
 * does. Attempts that fail back off exponentially from there, with "equal jitter" (half the
 * ceiling, plus a random part of the other half) so a fleet of pages that lost the same origin
 * does not come back in lockstep; the ceiling is capped. A `Retry-After` longer than that wins.
 *
 * @module
 */

/** Reconnection settings. */
export interface BackoffPolicy {
  /** The longest wait between attempts, in milliseconds. */
  maxDelayMs: number;
}

/** Default: at most a minute between attempts. */
export const DEFAULT_BACKOFF: BackoffPolicy = { maxDelayMs: 60_000 };

/**
 * Milliseconds to wait before the next attempt.
 *
 * @param retryMs the reconnection time (the stream's last `retry:`, or the default)
 * @param failures attempts that failed in a row before this one (0: the stream was open and ended)
 * @param jitter a random number in [0, 1)
 * @param retryAfterMs the server's `Retry-After`, if it sent one
 */
export function reconnectDelay(
  retryMs: number,
  failures: number,
  jitter: number,
  retryAfterMs: number | null = null,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
): number {
  const base = Math.max(0, retryMs);
  let delay: number;
  if (failures <= 0) {
    delay = base;
  } else {
    // 2^failures, without overflowing for a long outage.
    const ceiling = Math.min(policy.maxDelayMs, Math.max(base, 1) * 2 ** Math.min(failures, 30));
    const j = Math.min(Math.max(jitter, 0), 1);
    delay = Math.max(base, Math.round(ceiling / 2 + (j * ceiling) / 2));
    delay = Math.min(delay, Math.max(policy.maxDelayMs, base));
  }
  if (retryAfterMs !== null && retryAfterMs > delay) delay = retryAfterMs;
  return delay;
}

/**
 * Reads a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, relative to
 * `nowMs`. Returns milliseconds, or null when absent or malformed.
 */
export function parseRetryAfter(value: string | null, nowMs: number): number | null {
  if (value === null) return null;
  const v = value.trim();
  if (/^[0-9]+$/.test(v)) return Number.parseInt(v, 10) * 1000;
  // An HTTP-date starts with the day's name (IMF-fixdate, RFC 850 and asctime alike).
  if (!/^[A-Za-z]{3,9},? /.test(v)) return null;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - nowMs);
}
