// The WHATWG event-stream interpretation, on values: every rule where clients commonly differ,
// and every way a body can be split into chunks.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { EventStreamParser, EventTooLarge, parseEventStream, type Block, type Parsed } from '../src/parser.js';

function blocks(items: Parsed[]): Block[] {
  return items.flatMap((i) => (i.kind === 'block' ? [i.block] : []));
}

/** Feeds `body` split at every pair of positions and checks the result never changes. */
function parseEverySplit(body: string, lastEventId = ''): Parsed[] {
  const whole = parseEventStream(body, lastEventId);
  for (let a = 0; a <= body.length; a++) {
    for (let b = a; b <= body.length; b++) {
      const p = new EventStreamParser(lastEventId);
      const got = [...p.push(body.slice(0, a)), ...p.push(body.slice(a, b)), ...p.push(body.slice(b))];
      p.end();
      assert.deepEqual(got, whole, `split at ${a}/${b} of ${JSON.stringify(body)}`);
    }
  }
  return whole;
}

test('an origin stream: retry, the id-only head block, events, a keep-alive', () => {
  const body =
    'retry: 3000\n\n' +
    'id: 17-0\n\n' +
    'id: 18-0\nevent: message\ndata: {"channel":"chat.a","data":{"x":1},"time":18}\n\n' +
    ': keep-alive\n\n' +
    'id: 19-2\nevent: alert\ndata: {"channel":"chat.b","data":null,"time":19}\n\n';
  assert.deepEqual(parseEverySplit(body), [
    { kind: 'retry', ms: 3000 },
    { kind: 'block', block: { id: '17-0', type: 'message', data: null } },
    { kind: 'block', block: { id: '18-0', type: 'message', data: '{"channel":"chat.a","data":{"x":1},"time":18}' } },
    { kind: 'block', block: { id: '19-2', type: 'alert', data: '{"channel":"chat.b","data":null,"time":19}' } },
  ]);
});

test('CRLF, LF and lone CR all end lines, also when a CRLF is split across chunks', () => {
  const body = 'data: a\r\ndata: b\rdata: c\n\r\nid: 1\r\rdata: d\r\r';
  const got = blocks(parseEverySplit(body));
  assert.deepEqual(got, [
    { id: '', type: 'message', data: 'a\nb\nc' },
    { id: '1', type: 'message', data: null },
    { id: '1', type: 'message', data: 'd' },
  ]);
});

test('one leading BOM is dropped, a second one is part of the field name', () => {
  assert.deepEqual(blocks(parseEverySplit('\uFEFFdata: x\n\n')), [{ id: '', type: 'message', data: 'x' }]);
  assert.deepEqual(blocks(parseEventStream('\uFEFF\uFEFFdata: x\n\n')), []);
});

test('the last event id carries over to events without id:, and survives an id with NUL', () => {
  const body = 'id: 5-0\ndata: a\n\ndata: b\n\nid: bad\u0000id\ndata: c\n\nid\ndata: d\n\n';
  assert.deepEqual(blocks(parseEverySplit(body)), [
    { id: '5-0', type: 'message', data: 'a' },
    { id: '5-0', type: 'message', data: 'b' },
    { id: '5-0', type: 'message', data: 'c' },
    // `id` with no colon sets the buffer to the empty string.
    { id: '', type: 'message', data: 'd' },
  ]);
});

test('a reset frame without id keeps the position it resumed from', () => {
  const body = 'retry: 100\n\nevent: ssepush.reset\ndata: {"reason":"r","requestedId":"1-0","oldestId":"9-0"}\n\nid: 9-0\ndata: e\n\n';
  assert.deepEqual(blocks(parseEverySplit(body, '1-0')), [
    { id: '1-0', type: 'ssepush.reset', data: '{"reason":"r","requestedId":"1-0","oldestId":"9-0"}' },
    { id: '9-0', type: 'message', data: 'e' },
  ]);
});

test('field parsing: one space stripped, no colon, comments, unknown fields, empty data', () => {
  const body = 'data:  two spaces\n\ndata\n\ndata:\n\n:comment\nfoo: bar\nevent:\ndata:x\n\nevent: t\n\n';
  assert.deepEqual(blocks(parseEverySplit(body)), [
    { id: '', type: 'message', data: ' two spaces' },
    // `data` alone and `data:` dispatch an empty string.
    { id: '', type: 'message', data: '' },
    { id: '', type: 'message', data: '' },
    { id: '', type: 'message', data: 'x' },
  ]);
});

test('retry takes ASCII digits only', () => {
  const got = parseEverySplit('retry: 12\nretry: 1.5\nretry: -3\nretry:\nretry: 7 \nretry:40\n\n');
  assert.deepEqual(got, [
    { kind: 'retry', ms: 12 },
    { kind: 'retry', ms: 40 },
  ]);
});

test('an incomplete block at the end of the stream is discarded', () => {
  const p = new EventStreamParser();
  assert.deepEqual(p.push('id: 3\ndata: whole\n\nid: 4\ndata: half'), [
    { kind: 'block', block: { id: '3', type: 'message', data: 'whole' } },
  ]);
  p.end();
  // A new connection's first block does not inherit the discarded data.
  assert.deepEqual(p.push('data: next\n\n'), [{ kind: 'block', block: { id: '4', type: 'message', data: 'next' } }]);
});

test('ids are opaque: epoch tokens and any other text pass through unchanged', () => {
  const body = 'id: ep7Q:1795546555192-0\n\nid: ep7Q:1795546555193-4\ndata: {}\n\n';
  assert.deepEqual(blocks(parseEverySplit(body)), [
    { id: 'ep7Q:1795546555192-0', type: 'message', data: null },
    { id: 'ep7Q:1795546555193-4', type: 'message', data: '{}' },
  ]);
});

test('lines and events are bounded', () => {
  const p = new EventStreamParser('', 16);
  assert.throws(() => p.push('data: ' + 'x'.repeat(20)), EventTooLarge);
  const q = new EventStreamParser('', 16);
  assert.throws(() => q.push('data: 123456789\ndata: 123456789\n'), EventTooLarge);
  // At the limit is fine.
  assert.equal(blocks(new EventStreamParser('', 16).push('data: 12345\n\n')).length, 1);
});
