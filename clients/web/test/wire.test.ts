// Untrusted JSON into the protocol's shapes, on values taken from what the servers send.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  parseApiError,
  parseEnvelope,
  parseHandoffCreated,
  parseResetData,
  parseWebPushMessage,
  webPushTarget,
  WireError,
} from '../src/wire.js';

test('a Web Push wake, background and alert mode', () => {
  // What the proxy encrypts: `WebPushMessage` in proxy/src/protocol/wake.rs.
  assert.deepEqual(parseWebPushMessage('{"ssepush":{"handoff":"h_1","pending":4,"latestEventId":"e7"}}'), {
    ssepush: { handoff: 'h_1', pending: 4, latestEventId: 'e7' },
  });
  assert.deepEqual(
    parseWebPushMessage(
      '{"notification":{"title":"New activity","body":"1 new event"},"ssepush":{"handoff":"h_2","pending":1,"latestEventId":null}}',
    ),
    {
      ssepush: { handoff: 'h_2', pending: 1, latestEventId: null },
      notification: { title: 'New activity', body: '1 new event' },
    },
  );
});

test('pushes that are not wakes are refused with WireError', () => {
  for (const bad of ['', 'not json', '[]', '{}', '{"ssepush":{}}', '{"ssepush":{"handoff":"h","pending":-1}}',
    '{"ssepush":{"handoff":"h","pending":1,"latestEventId":7}}', '{"ssepush":{"handoff":"h","pending":1},"notification":{"title":1}}']) {
    assert.throws(() => parseWebPushMessage(bad), WireError, bad);
  }
});

test('handoff answers, resets, envelopes and errors', () => {
  assert.deepEqual(parseHandoffCreated({ id: 'h_1', token: 't', expiresAt: '2030-01-01T00:00:00.000Z' }), {
    id: 'h_1',
    token: 't',
    expiresAt: '2030-01-01T00:00:00.000Z',
  });
  assert.throws(() => parseHandoffCreated({ id: 'h_1' }), WireError);
  // The origin's reset and the proxy's gap share these fields.
  assert.deepEqual(parseResetData('{"reason":"r","requestedId":"1-0","oldestId":null}'), {
    reason: 'r',
    requestedId: '1-0',
    oldestId: null,
  });
  assert.deepEqual(
    parseResetData('{"reason":"g","source":"proxy","requestedId":null,"throughId":"3-0","oldestId":"4-0"}'),
    { reason: 'g', requestedId: null, oldestId: '4-0' },
  );
  assert.deepEqual(parseEnvelope('{"channel":"chat.a","data":{"x":1},"time":5}'), {
    channel: 'chat.a',
    data: { x: 1 },
    time: 5,
  });
  assert.throws(() => parseEnvelope('{"channel":"a"}'), WireError);
  assert.deepEqual(parseApiError({ error: { code: 'invalid_filter', message: 'm', line: 1, column: 3 } }), {
    code: 'invalid_filter',
    message: 'm',
    line: 1,
    column: 3,
  });
  assert.equal(parseApiError({ nope: 1 }), null);
});

test('a PushSubscription becomes the push target, via toJSON or as JSON', () => {
  const json = { endpoint: 'https://push.example/x', expirationTime: null, keys: { p256dh: 'BP', auth: 'au' } };
  const want = { platform: 'webpush', subscription: json };
  assert.deepEqual(webPushTarget(json), want);
  assert.deepEqual(webPushTarget({ toJSON: () => json }), want);
  assert.throws(() => webPushTarget({ toJSON: () => ({ endpoint: 'x' }) }), WireError);
});
