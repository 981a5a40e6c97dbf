// Reconnection delays and Retry-After, on values.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { parseRetryAfter, reconnectDelay } from '../src/backoff.js';

test('an open stream that ended reconnects after the retry time, whatever the jitter', () => {
  assert.equal(reconnectDelay(3000, 0, 0), 3000);
  assert.equal(reconnectDelay(3000, 0, 0.99), 3000);
});

test('failed attempts back off exponentially with equal jitter, capped', () => {
  const policy = { maxDelayMs: 10_000 };
  // failures 1: ceiling 2 s → [1 s, 2 s]
  assert.equal(reconnectDelay(1000, 1, 0, null, policy), 1000);
  assert.equal(reconnectDelay(1000, 1, 1, null, policy), 2000);
  // failures 3: ceiling 8 s → [4 s, 8 s]
  assert.equal(reconnectDelay(1000, 3, 0, null, policy), 4000);
  assert.equal(reconnectDelay(1000, 3, 0.5, null, policy), 6000);
  // Far out: capped, never overflowing.
  assert.equal(reconnectDelay(1000, 1000, 1, null, policy), 10_000);
  assert.ok(reconnectDelay(1000, 1000, 0, null, policy) >= 5000);
  // Never below the server's retry time, and a retry time above the cap is honoured.
  assert.equal(reconnectDelay(30_000, 2, 0, null, policy), 30_000);
});

test('a longer Retry-After wins', () => {
  assert.equal(reconnectDelay(1000, 1, 0, 9000), 9000);
  assert.equal(reconnectDelay(5000, 0, 0, 100), 5000);
});

test('Retry-After as seconds or HTTP-date', () => {
  const now = Date.parse('Sun, 06 Nov 1994 08:49:37 GMT');
  assert.equal(parseRetryAfter('120', now), 120_000);
  assert.equal(parseRetryAfter(' 7 ', now), 7000);
  assert.equal(parseRetryAfter('Sun, 06 Nov 1994 08:49:47 GMT', now), 10_000);
  assert.equal(parseRetryAfter('Sun, 06 Nov 1994 08:49:00 GMT', now), 0);
  assert.equal(parseRetryAfter('soon', now), null);
  assert.equal(parseRetryAfter('-1', now), null);
  assert.equal(parseRetryAfter(null, now), null);
});
