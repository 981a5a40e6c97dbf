// The SsePushSource state machine, on values: inputs in, state and commands out.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { start, step, readyStateOf, type Command, type Handoff, type Input, type State } from '../src/machine.js';
import type { Block } from '../src/parser.js';

const H: Handoff = { id: 'h_1', token: 'secret', expiresAt: '2030-01-01T00:00:00.000Z' };

/** Runs inputs from a state; returns the final state and every command, in order. */
function run(s: State, inputs: Input[]): { state: State; commands: Command[] } {
  const commands: Command[] = [];
  for (const i of inputs) {
    const r = step(s, i);
    s = r.state;
    commands.push(...r.commands);
  }
  return { state: s, commands };
}

const ev = (id: string, data = `{"n":"${id}"}`, type = 'message'): Block => ({ id, type, data });

/** Delivered events as [id, type, via]. */
function delivered(cs: Command[]): Array<[string, string, string]> {
  return cs.flatMap((c) => (c.type === 'deliver' ? [[c.event.lastEventId, c.event.type, c.event.via] as [string, string, string]] : []));
}

function kinds(cs: Command[]): string[] {
  return cs.filter((c) => c.type !== 'deliver').map((c) => c.type);
}

/** An open stream (generation 1) that has read the head block and two events. */
function streaming(handoffEnabled = true): State {
  const s0 = start({ handoffEnabled });
  assert.deepEqual(s0.commands, [{ type: 'connect', stream: 1, lastEventId: '' }]);
  const r = run(s0.state, [
    { type: 'streamOpened', stream: 1 },
    { type: 'retry', stream: 1, ms: 500 },
    { type: 'block', stream: 1, block: { id: '10-0', type: 'message', data: null } },
    { type: 'block', stream: 1, block: ev('11-0') },
    { type: 'block', stream: 1, block: ev('12-0') },
  ]);
  assert.equal(r.state.phase, 'open');
  assert.equal(r.state.retryMs, 500);
  assert.deepEqual(delivered(r.commands), [
    ['11-0', 'message', 'stream'],
    ['12-0', 'message', 'stream'],
  ]);
  assert.deepEqual(kinds(r.commands), ['open']);
  return r.state;
}

test('an id-only block moves the position without delivering anything', () => {
  const s = start({ handoffEnabled: true }).state;
  const r = run(s, [
    { type: 'streamOpened', stream: 1 },
    { type: 'block', stream: 1, block: { id: 'head-7', type: 'message', data: null } },
  ]);
  assert.equal(r.state.lastEventId, 'head-7');
  assert.deepEqual(delivered(r.commands), []);
  // Handing off right away hands off from the head, not from nothing.
  const h = step(r.state, { type: 'hidden' });
  assert.deepEqual(h.commands, [{ type: 'abortStream' }, { type: 'createHandoff', lastEventId: 'head-7' }]);
});

test('hidden: the stream is aborted in the same step that hands off, and its late frames are ignored', () => {
  const s = streaming();
  const h = step(s, { type: 'hidden' });
  assert.equal(h.state.phase, 'handingOff');
  assert.deepEqual(h.commands, [{ type: 'abortStream' }, { type: 'createHandoff', lastEventId: '12-0' }]);
  // A frame the aborted stream had already read arrives after: not delivered, position unmoved.
  const late = run(h.state, [
    { type: 'block', stream: 1, block: ev('13-0') },
    { type: 'streamFailed', stream: 1, fatal: false, reason: 'aborted', jitter: 0 },
  ]);
  assert.deepEqual(late.commands, []);
  assert.equal(late.state.lastEventId, '12-0');
  assert.equal(late.state.phase, 'handingOff');
});

test('the whole loop: hand off, wake while hidden, come back, hand back, resume the stream', () => {
  let s = step(streaming(), { type: 'hidden' }).state;

  let r = run(s, [{ type: 'handoffCreated', handoff: H }]);
  assert.equal(r.state.phase, 'handedOff');
  assert.equal(readyStateOf(r.state.phase), 0);
  assert.deepEqual(r.commands, [{ type: 'remember', handoff: H, lastEventId: '12-0' }]);
  s = r.state;

  // A wake for someone else's handoff changes nothing.
  assert.deepEqual(step(s, { type: 'wake', handoff: 'h_other' }).commands, []);

  // Our wake: check in while still hidden; the events are delivered and we stay handed off.
  r = run(s, [{ type: 'wake', handoff: 'h_1' }]);
  assert.deepEqual(r.commands, [{ type: 'catchUp', handoff: H, lastEventId: '12-0' }]);
  r = run(r.state, [{ type: 'caughtUp', blocks: [ev('13-0'), ev('14-0', '{}', 'alert')] }]);
  assert.equal(r.state.phase, 'handedOff');
  assert.equal(r.state.lastEventId, '14-0');
  assert.deepEqual(delivered(r.commands), [
    ['13-0', 'message', 'proxy'],
    ['14-0', 'alert', 'proxy'],
  ]);
  assert.deepEqual(r.commands.at(-1), { type: 'remember', handoff: H, lastEventId: '14-0' });
  s = r.state;

  // Visible: catch up from the new position, hand back with it, stream again from it.
  r = run(s, [{ type: 'visible' }]);
  assert.deepEqual(r.commands, [{ type: 'catchUp', handoff: H, lastEventId: '14-0' }]);
  r = run(r.state, [{ type: 'caughtUp', blocks: [ev('15-0')] }]);
  assert.deepEqual(delivered(r.commands), [['15-0', 'message', 'proxy']]);
  assert.deepEqual(r.commands.at(-1), { type: 'handBack', handoff: H, lastEventId: '15-0', detached: false });
  assert.equal(r.state.phase, 'handingBack');
  r = run(r.state, [{ type: 'handedBack' }]);
  assert.deepEqual(r.commands, [
    { type: 'forget', handoff: H },
    { type: 'connect', stream: 3, lastEventId: '15-0' },
  ]);
  assert.equal(r.state.handoff, null);
  r = run(r.state, [
    { type: 'block', stream: 3, block: ev('99-0') }, // not open yet: ignored
    { type: 'streamOpened', stream: 3 },
    { type: 'block', stream: 3, block: ev('16-0') },
  ]);
  assert.deepEqual(delivered(r.commands), [['16-0', 'message', 'stream']]);
  assert.equal(r.state.lastEventId, '16-0');
  assert.equal(readyStateOf(r.state.phase), 1);
});

test('a gap in the proxy buffer delivers nothing from it: the origin resumes from the old position', () => {
  let s = run(step(streaming(), { type: 'hidden' }).state, [{ type: 'handoffCreated', handoff: H }]).state;
  const gap: Block = {
    id: '12-0',
    type: 'ssepush.reset',
    data: '{"reason":"overflow","source":"proxy","requestedId":"12-0","throughId":"20-0","oldestId":"21-0"}',
  };
  const r = run(s, [
    { type: 'visible' },
    { type: 'caughtUp', blocks: [gap, ev('21-0'), ev('22-0')] },
  ]);
  assert.deepEqual(delivered(r.commands), []);
  assert.deepEqual(r.commands.at(-1), { type: 'handBack', handoff: H, lastEventId: '12-0', detached: false });
  s = run(r.state, [{ type: 'handedBack' }]).state;
  assert.equal(s.lastEventId, '12-0');
  assert.equal(s.phase, 'connecting');
});

test('the origin\'s ssepush.reset is delivered to the app, and the position stays until the next event', () => {
  const s = start({ lastEventId: '1-0' }).state;
  const r = run(s, [
    { type: 'streamOpened', stream: 1 },
    { type: 'block', stream: 1, block: { id: '1-0', type: 'ssepush.reset', data: '{"requestedId":"1-0","oldestId":"9-0"}' } },
    { type: 'block', stream: 1, block: ev('9-0') },
  ]);
  assert.deepEqual(delivered(r.commands), [
    ['1-0', 'ssepush.reset', 'stream'],
    ['9-0', 'message', 'stream'],
  ]);
});

test('a service-worker batch is taken only when it starts exactly at the position', () => {
  const s = run(step(streaming(), { type: 'hidden' }).state, [{ type: 'handoffCreated', handoff: H }]).state;
  // From an older position (the record was stale): the page reads the proxy itself.
  let r = run(s, [{ type: 'bufferedEvents', handoff: 'h_1', after: '11-0', blocks: [ev('12-0'), ev('13-0')] }]);
  assert.deepEqual(delivered(r.commands), []);
  assert.deepEqual(r.commands, [{ type: 'catchUp', handoff: H, lastEventId: '12-0' }]);
  // For another handoff: ignored.
  assert.deepEqual(step(s, { type: 'bufferedEvents', handoff: 'h_2', after: '12-0', blocks: [ev('13-0')] }).commands, []);
  // Exactly at the position: delivered, remembered, still handed off.
  r = run(s, [{ type: 'bufferedEvents', handoff: 'h_1', after: '12-0', blocks: [ev('13-0'), ev('14-0')] }]);
  assert.deepEqual(delivered(r.commands), [
    ['13-0', 'message', 'worker'],
    ['14-0', 'message', 'worker'],
  ]);
  assert.equal(r.state.phase, 'handedOff');
  assert.deepEqual(r.commands.at(-1), { type: 'remember', handoff: H, lastEventId: '14-0' });
  // The same batch again (posted twice): no longer at the position, so never delivered twice.
  const again = run(r.state, [{ type: 'bufferedEvents', handoff: 'h_1', after: '12-0', blocks: [ev('13-0'), ev('14-0')] }]);
  assert.deepEqual(delivered(again.commands), []);
  // While catching up, a batch is not taken (the catch-up answer covers it).
  const busy = run(s, [{ type: 'visible' }, { type: 'bufferedEvents', handoff: 'h_1', after: '12-0', blocks: [ev('13-0')] }]);
  assert.deepEqual(delivered(busy.commands), []);
});

test('visibility changes while a request is in flight are honoured when it answers', () => {
  const hidden = step(streaming(), { type: 'hidden' }).state;
  // Back before the proxy answered: catch up at once, then hand back.
  let r = run(hidden, [{ type: 'visible' }, { type: 'handoffCreated', handoff: H }]);
  assert.deepEqual(r.commands.at(-1), { type: 'catchUp', handoff: H, lastEventId: '12-0' });
  assert.equal(r.state.phase, 'catchingUp');
  // Hidden again during the catch-up: keep the handoff, no handback.
  r = run(r.state, [{ type: 'hidden' }, { type: 'caughtUp', blocks: [ev('13-0')] }]);
  assert.equal(r.state.phase, 'handedOff');
  assert.ok(!r.commands.some((c) => c.type === 'handBack'));
  // Hidden during a handback: hand off anew from the same position.
  r = run(r.state, [{ type: 'visible' }, { type: 'caughtUp', blocks: [] }, { type: 'hidden' }, { type: 'handedBack' }]);
  assert.equal(r.state.phase, 'handingOff');
  assert.deepEqual(r.commands.at(-1), { type: 'createHandoff', lastEventId: '13-0' });
});

test('a refused handoff keeps the stream running from the same position', () => {
  const r = run(step(streaming(), { type: 'hidden' }).state, [{ type: 'handoffFailed', reason: '403 origin_not_allowed' }]);
  assert.deepEqual(kinds(r.commands), ['handoffError', 'connect']);
  assert.deepEqual(r.commands.at(-1), { type: 'connect', stream: 3, lastEventId: '12-0' });
  assert.equal(r.state.phase, 'connecting');
});

test('a handoff the proxy forgot: visible streams again, hidden hands off anew', () => {
  const s = run(step(streaming(), { type: 'hidden' }).state, [{ type: 'handoffCreated', handoff: H }]).state;
  let r = run(s, [{ type: 'visible' }, { type: 'catchUpFailed', reason: '404', gone: true }]);
  assert.deepEqual(kinds(r.commands), ['catchUp', 'forget', 'connect']);
  r = run(s, [{ type: 'wake', handoff: 'h_1' }, { type: 'catchUpFailed', reason: '404', gone: true }]);
  assert.deepEqual(kinds(r.commands), ['catchUp', 'forget', 'createHandoff']);
  assert.equal(r.state.phase, 'handingOff');
});

test('an unreachable proxy: hidden waits for the next try, visible streams and hands back detached', () => {
  const s = run(step(streaming(), { type: 'hidden' }).state, [{ type: 'handoffCreated', handoff: H }]).state;
  let r = run(s, [{ type: 'wake', handoff: 'h_1' }, { type: 'catchUpFailed', reason: 'network', gone: false }]);
  assert.equal(r.state.phase, 'handedOff');
  r = run(r.state, [{ type: 'visible' }, { type: 'catchUpFailed', reason: 'network', gone: false }]);
  assert.deepEqual(r.commands.slice(1), [
    { type: 'handBack', handoff: H, lastEventId: '12-0', detached: true },
    { type: 'forget', handoff: H },
    { type: 'connect', stream: 3, lastEventId: '12-0' },
  ]);
});

test('without a proxy, visibility changes nothing (EventSource behaviour)', () => {
  const s = streaming(false);
  const r = run(s, [{ type: 'hidden' }, { type: 'visible' }]);
  assert.deepEqual(r.commands, []);
  assert.equal(r.state.phase, 'open');
});

test('reconnects: after the retry time when an open stream ends, then with backoff; fatal statuses close', () => {
  const s = streaming();
  let r = run(s, [{ type: 'streamFailed', stream: 1, fatal: false, reason: 'ended', jitter: 0.5 }]);
  assert.deepEqual(r.commands, [
    { type: 'error', reason: 'ended' },
    { type: 'scheduleReconnect', stream: 1, delayMs: 500 },
  ]);
  assert.equal(readyStateOf(r.state.phase), 0);
  r = run(r.state, [{ type: 'reconnectDue', stream: 1 }]);
  assert.deepEqual(r.commands, [{ type: 'connect', stream: 2, lastEventId: '12-0' }]);
  // The next attempt fails too: a longer wait, and Retry-After wins when longer still.
  r = run(r.state, [{ type: 'streamFailed', stream: 2, fatal: false, reason: '503', jitter: 0, retryAfterMs: 7000 }]);
  assert.deepEqual(r.commands.at(-1), { type: 'scheduleReconnect', stream: 2, delayMs: 7000 });
  r = run(r.state, [
    { type: 'reconnectDue', stream: 1 }, // a stale timer
    { type: 'reconnectDue', stream: 2 },
    { type: 'streamFailed', stream: 3, fatal: true, reason: '401', jitter: 0 },
  ]);
  assert.deepEqual(kinds(r.commands), ['connect', 'error']);
  assert.equal(r.state.phase, 'closed');
  assert.equal(readyStateOf(r.state.phase), 2);
  assert.deepEqual(step(r.state, { type: 'visible' }).commands, []);
});

test('hidden while waiting to reconnect hands off; the old timer is ignored', () => {
  const waiting = run(streaming(), [{ type: 'streamFailed', stream: 1, fatal: false, reason: 'x', jitter: 0 }]).state;
  const r = run(waiting, [{ type: 'hidden' }, { type: 'reconnectDue', stream: 1 }]);
  assert.deepEqual(r.commands, [{ type: 'abortStream' }, { type: 'createHandoff', lastEventId: '12-0' }]);
});

test('close hands a handoff back (detached) and silences everything after', () => {
  const s = run(step(streaming(), { type: 'hidden' }).state, [{ type: 'handoffCreated', handoff: H }]).state;
  const r = run(s, [{ type: 'close' }, { type: 'visible' }, { type: 'wake', handoff: 'h_1' }]);
  assert.deepEqual(r.commands, [
    { type: 'handBack', handoff: H, lastEventId: '12-0', detached: true },
    { type: 'forget', handoff: H },
  ]);
  const open = run(streaming(), [{ type: 'close' }, { type: 'block', stream: 1, block: ev('13-0') }]);
  assert.deepEqual(open.commands, [{ type: 'abortStream' }]);
});

test('a page that starts hidden connects and hands off at once from the given position', () => {
  const r = start({ handoffEnabled: true, visible: false, lastEventId: 'saved-3' });
  assert.deepEqual(r.commands, [
    { type: 'connect', stream: 1, lastEventId: 'saved-3' },
    { type: 'abortStream' },
    { type: 'createHandoff', lastEventId: 'saved-3' },
  ]);
});
