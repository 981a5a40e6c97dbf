/**
 * The WHATWG event-stream interpretation (HTML §9.2.6 "Interpreting an event stream"), done
 * incrementally on decoded text, for streams read with `fetch` instead of `EventSource`.
 *
 * It follows the standard to the letter where clients commonly differ:
 * - lines end at CRLF, LF or a lone CR, also when a CRLF is split across two chunks;
 * - one leading U+FEFF (BOM) is dropped;
 * - `id` containing U+0000 is ignored; the last event ID buffer is **not** reset between events,
 *   so an event without `id:` carries the previous one;
 * - a block without `data:` (e.g. `id: 42` and a blank line, the origin's first block) dispatches
 *   nothing but still sets the last event ID: it is reported as a {@link Block} with
 *   `data === null` so the caller can move its cursor;
 * - `data:` with an empty value does dispatch (an empty string);
 * - `retry` takes ASCII digits only; anything else is ignored;
 * - what follows the last blank line when the stream ends is discarded ({@link EventStreamParser.end}).
 *
 * Bounded: a line or an event larger than `maxEventSize` characters throws {@link EventTooLarge}
 * instead of growing without limit.
 *
 * @module
 */

import type { EventId } from './wire.js';

/** One dispatch of the event stream: a blank line was reached. */
export interface Block {
  /** The last event ID after this block (the `id:` it carried, or the previous one). */
  id: EventId;
  /** The event type (`message` when the block had no `event:`). */
  type: string;
  /** The event data, or null when the block had no `data:` field (nothing is dispatched). */
  data: string | null;
}

/** What the parser reports, in stream order. */
export type Parsed = { kind: 'block'; block: Block } | { kind: 'retry'; ms: number };

/** An event or line larger than the parser's limit. */
export class EventTooLarge extends Error {
  override name = 'EventTooLarge';
  constructor(readonly limit: number) {
    super(`an event stream line or event is larger than ${limit} characters`);
  }
}

/** Default {@link EventStreamParser} limit: 4 Mi characters per line or event. */
export const DEFAULT_MAX_EVENT_SIZE = 4 * 1024 * 1024;

/** An incremental event-stream parser. Feed it decoded text with {@link push}. */
export class EventStreamParser {
  private line = '';
  private data = '';
  private hasData = false;
  private eventType = '';
  private lastEventIdBuffer: EventId;
  private reported: EventId;
  private started = false;
  private skipLineFeed = false;

  /** @param lastEventId the last event ID the stream starts with (what the request resumed
   * from), so a block without `id:` reports it. */
  constructor(lastEventId: EventId = '', private readonly maxEventSize = DEFAULT_MAX_EVENT_SIZE) {
    this.lastEventIdBuffer = lastEventId;
    this.reported = lastEventId;
  }

  /** The last event ID buffer (what the next dispatch will report). */
  get lastEventId(): EventId {
    return this.lastEventIdBuffer;
  }

  /** Parses the next piece of text and returns what it completed. */
  push(chunk: string): Parsed[] {
    const out: Parsed[] = [];
    let text = chunk;
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    let i = 0;
    if (this.skipLineFeed && text.length > 0) {
      this.skipLineFeed = false;
      if (text.charCodeAt(0) === 0x0a) i = 1;
    }
    while (i < text.length) {
      let end = i;
      while (end < text.length) {
        const c = text.charCodeAt(end);
        if (c === 0x0a || c === 0x0d) break;
        end++;
      }
      if (end === text.length) {
        this.line += text.slice(i);
        if (this.line.length > this.maxEventSize) throw new EventTooLarge(this.maxEventSize);
        break;
      }
      const line = this.line + text.slice(i, end);
      this.line = '';
      if (text.charCodeAt(end) === 0x0d) {
        if (end + 1 < text.length) {
          i = text.charCodeAt(end + 1) === 0x0a ? end + 2 : end + 1;
        } else {
          // A CR at the end of the chunk: a LF starting the next chunk belongs to it.
          this.skipLineFeed = true;
          i = end + 1;
        }
      } else {
        i = end + 1;
      }
      this.processLine(line, out);
    }
    return out;
  }

  /** The stream ended: an incomplete block is discarded, as the standard says. */
  end(): void {
    this.line = '';
    this.data = '';
    this.hasData = false;
    this.eventType = '';
    this.skipLineFeed = false;
  }

  private processLine(line: string, out: Parsed[]): void {
    if (line === '') {
      this.dispatch(out);
      return;
    }
    if (line.charCodeAt(0) === 0x3a /* : */) return;
    const colon = line.indexOf(':');
    let field: string;
    let value: string;
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    } else {
      field = line;
      value = '';
    }
    switch (field) {
      case 'event':
        this.eventType = value;
        break;
      case 'data':
        this.data += value + '\n';
        this.hasData = true;
        if (this.data.length > this.maxEventSize) throw new EventTooLarge(this.maxEventSize);
        break;
      case 'id':
        if (!value.includes('\u0000')) this.lastEventIdBuffer = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) out.push({ kind: 'retry', ms: Number.parseInt(value, 10) });
        break;
      default:
        // Unknown fields are ignored.
        break;
    }
  }

  private dispatch(out: Parsed[]): void {
    const id = this.lastEventIdBuffer;
    if (!this.hasData) {
      this.eventType = '';
      // Only the last event ID may have changed; a keep-alive comment's blank line reports nothing.
      if (id !== this.reported) {
        this.reported = id;
        out.push({ kind: 'block', block: { id, type: 'message', data: null } });
      }
      return;
    }
    const data = this.data.endsWith('\n') ? this.data.slice(0, -1) : this.data;
    const type = this.eventType === '' ? 'message' : this.eventType;
    this.data = '';
    this.hasData = false;
    this.eventType = '';
    this.reported = id;
    out.push({ kind: 'block', block: { id, type, data } });
  }
}

/** Parses a whole event-stream body (e.g. the proxy's SSE catch-up) into its blocks and
 * `retry` values; an incomplete last block is discarded. */
export function parseEventStream(body: string, lastEventId: EventId = '', maxEventSize = DEFAULT_MAX_EVENT_SIZE): Parsed[] {
  const p = new EventStreamParser(lastEventId, maxEventSize);
  const out = p.push(body);
  p.end();
  return out;
}
