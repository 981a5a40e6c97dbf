// SsePushSource's shell over real sockets: a small event-stream server on a loopback port plays
// the origin's HTTP side (the real origin and proxy are in the repository's browser test). What
// is checked here is the shell's own work: chunked bytes decoded and parsed, the position sent
// back on reconnect, `retry:` and `Retry-After` honoured, a 4xx closing for good.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { SsePushSource, withPosition, stripPosition, type SsePushEvent } from '../src/source.js';

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

/** Serves each request with the next handler (the last one repeats); records request URLs. */
async function server(handlers: Handler[]) {
  const urls: string[] = [];
  const s = createServer((req, res) => {
    urls.push(req.url ?? '');
    const h = handlers[Math.min(urls.length - 1, handlers.length - 1)]!;
    h(req, res, urls.length);
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1/sse?channel=chat.*`,
    urls,
    close: () =>
      new Promise<void>((r) => {
        s.closeAllConnections();
        s.close(() => r());
      }),
  };
}

function sse(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
}

/** Resolves with the first `n` events of `type` (and whatever `error`s came before). */
function collect(source: SsePushSource, n: number, type = 'message') {
  const events: SsePushEvent[] = [];
  let errors = 0;
  source.addEventListener('error', () => errors++);
  return new Promise<{ events: SsePushEvent[]; errors: number }>((resolve) => {
    source.addEventListener(type, (e) => {
      events.push(e as SsePushEvent);
      if (events.length === n) resolve({ events, errors });
    });
  });
}

test('split chunks are parsed, and a reconnect resumes from the last id with the retry time', async () => {
  const srv = await server([
    (_req, res) => {
      sse(res);
      // A multi-byte character split across writes, and a CRLF split too.
      const body = Buffer.from('retry: 20\r\n\r\nid: 1-0\ndata: {"t":"é"}\r\n\r\nid: 2-0\n\n');
      res.write(body.subarray(0, 28));
      setImmediate(() => {
        res.write(body.subarray(28, 38));
        setImmediate(() => res.end(body.subarray(38)));
      });
    },
    (_req, res) => {
      sse(res);
      res.write('id: 3-0\nevent: message\ndata: {"t":"b"}\n\n');
    },
  ]);
  const source = new SsePushSource(srv.url);
  const got = await collect(source, 2);
  assert.deepEqual(
    got.events.map((e) => [e.lastEventId, e.data, e.via, e.origin]),
    [
      ['1-0', '{"t":"é"}', 'stream', new URL(srv.url).origin],
      ['3-0', '{"t":"b"}', 'stream', new URL(srv.url).origin],
    ],
  );
  // The id-only block `id: 2-0` moved the position: the reconnect resumed after it.
  assert.equal(srv.urls.length, 2);
  assert.equal(new URL(srv.urls[1]!, 'http://x').searchParams.get('lastEventId'), '2-0');
  assert.equal(new URL(srv.urls[0]!, 'http://x').searchParams.get('lastEventId'), null);
  assert.equal(got.errors, 1, 'one error event for the reconnect');
  assert.equal(source.readyState, SsePushSource.OPEN);
  assert.equal(source.lastEventId, '3-0');
  source.close();
  assert.equal(source.readyState, SsePushSource.CLOSED);
  await srv.close();
});

test('a 4xx closes the source for good; a 503 with Retry-After is retried', async () => {
  const refused = await server([
    (_req, res) => {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('{"error":{"code":"unauthorized","message":"no"}}');
    },
  ]);
  const source = new SsePushSource(refused.url, { lastEventId: 'saved-1' });
  await new Promise<void>((r) => source.addEventListener('error', () => r()));
  assert.equal(source.readyState, SsePushSource.CLOSED);
  assert.equal(source.phase, 'closed');
  assert.equal(new URL(refused.urls[0]!, 'http://x').searchParams.get('lastEventId'), 'saved-1');
  await refused.close();

  const busy = await server([
    (_req, res) => {
      res.writeHead(503, { 'retry-after': '0' });
      res.end();
    },
    (_req, res) => {
      sse(res);
      res.write('id: 5-0\ndata: x\n\n');
    },
  ]);
  const again = new SsePushSource(busy.url, { retryMs: 10 });
  const got = await collect(again, 1);
  assert.equal(got.events[0]!.lastEventId, '5-0');
  assert.equal(got.errors, 1);
  again.close();
  await busy.close();
});

test('a stream that is not text/event-stream fails, as WHATWG says', async () => {
  const srv = await server([
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html>');
    },
  ]);
  const source = new SsePushSource(srv.url);
  await new Promise<void>((r) => source.addEventListener('error', () => r()));
  assert.equal(source.readyState, SsePushSource.CLOSED);
  assert.equal(srv.urls.length, 1);
  await srv.close();
});

test('the position travels in the query, never twice', () => {
  const u = 'http://o.test/v1/sse?channel=a&lastEventId=old&channel=b';
  assert.equal(stripPosition(u), 'http://o.test/v1/sse?channel=a&channel=b');
  assert.equal(withPosition(stripPosition(u), 'ep:1-0'), 'http://o.test/v1/sse?channel=a&channel=b&lastEventId=ep%3A1-0');
  assert.equal(withPosition('http://o.test/v1/sse?channel=a', ''), 'http://o.test/v1/sse?channel=a');
});
