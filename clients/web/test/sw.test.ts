// The service-worker module's decisions, on values: which notification a wake gets, and what
// the pages are told.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { handlePush, planNotification, type WindowClientLike, type WorkerScopeLike } from '../src/sw.js';
import { readWorkerMessage } from '../src/source.js';

const wake = { handoff: 'h_1', pending: 3, latestEventId: '9-0' };

test('auto: a notification only when no page of the app is visible', () => {
  assert.equal(planNotification({ ssepush: wake }, true), null);
  const n = planNotification({ ssepush: wake }, false);
  assert.equal(n?.title, 'New activity');
  assert.equal(n?.options.body, '3 new events');
  assert.equal(n?.options.tag, 'ssepush-h_1');
  assert.equal(planNotification({ ssepush: { ...wake, pending: 1 } }, false)?.options.body, '1 new event');
  // Alert mode brings its own words.
  const alert = planNotification({ ssepush: wake, notification: { title: 'T', body: 'B' } }, false);
  assert.deepEqual([alert?.title, alert?.options.body], ['T', 'B']);
  assert.equal(planNotification({ ssepush: wake, notification: { title: 'T', body: 'B' } }, true), null);
});

test('always, never, and the app\'s own words', () => {
  assert.ok(planNotification({ ssepush: wake }, true, { notify: 'always' }));
  assert.equal(planNotification({ ssepush: wake }, false, { notify: 'never' }), null);
  const n = planNotification({ ssepush: wake }, false, { title: 'Chat', body: (w) => `${w.pending} messages`, icon: '/i.png' });
  assert.deepEqual([n?.title, n?.options.body, n?.options['icon']], ['Chat', '3 messages', '/i.png']);
});

/** A worker scope that records what the module does with it. */
function scope(pages: WindowClientLike[]) {
  const shown: Array<[string, unknown]> = [];
  const s: WorkerScopeLike = {
    addEventListener: () => undefined,
    clients: { matchAll: async () => pages },
    registration: {
      scope: 'http://127.0.0.1/',
      showNotification: async (title, options) => {
        shown.push([title, options]);
      },
    },
  };
  return { s, shown };
}

test('a wake is posted to every page, and a hidden app gets a notification', async () => {
  const got: unknown[] = [];
  const page = (visibilityState: string): WindowClientLike => ({ url: 'http://127.0.0.1/', visibilityState, postMessage: (m) => got.push(m) });
  const { s, shown } = scope([page('hidden'), page('hidden')]);
  const out = await handlePush(s, JSON.stringify({ ssepush: wake }));
  assert.equal(out.posted, 2);
  assert.equal(out.notified, true);
  assert.equal(shown.length, 1);
  assert.deepEqual(got, [
    { type: 'ssepush.wake', wake },
    { type: 'ssepush.wake', wake },
  ]);
  // What the page makes of it.
  assert.deepEqual(readWorkerMessage(got[0]), { type: 'ssepush.wake', wake });
});

test('a push that is not a wake is left to the app', async () => {
  const { s, shown } = scope([]);
  const out = await handlePush(s, '{"hello":1}');
  assert.deepEqual(out, { wake: null, posted: 0, events: null, notified: false });
  assert.equal(shown.length, 0);
});

test('pages check what the worker posts', () => {
  assert.equal(readWorkerMessage({ type: 'ssepush.wake' }), null);
  assert.equal(readWorkerMessage('x'), null);
  assert.deepEqual(
    readWorkerMessage({ type: 'ssepush.events', wake, after: '8-0', blocks: [{ id: '9-0', type: 'message', data: '{}' }] }),
    { type: 'ssepush.events', wake, after: '8-0', blocks: [{ id: '9-0', type: 'message', data: '{}' }] },
  );
  assert.equal(readWorkerMessage({ type: 'ssepush.events', wake, after: '8-0', blocks: [{ id: 9 }] }), null);
});
