/**
 * Every JSON shape this client exchanges with the ssepush origin and push proxy, as TypeScript
 * types, with the checks that turn untrusted JSON into them.
 *
 * The shapes are the servers' own (docs/web.md lists them next to their Rust definitions):
 * the origin's SSE frames and `ssepush.reset` (`origin/src/sse.rs`), the proxy's handoff request,
 * its answers, its gap marker, the push target and the Web Push wake (all in
 * `proxy/src/protocol/`). Field names are
 * the wire's (camelCase); nothing here invents a field the servers do not send.
 *
 * Event ids are opaque strings: this client stores and compares them for equality, and never
 * parses or orders them (an origin may change their format, e.g. add an epoch token).
 *
 * @module
 */

/** An event id as the origin issued it. Opaque: only ever stored, sent back, or compared with `===`. */
export type EventId = string;

/** The `data:` of an origin event frame: which channel it came from, the published data, and
 * the publish time (Unix milliseconds). The id is the frame's `id:`, the type its `event:`. */
export interface Envelope {
  channel: string;
  data: unknown;
  time: number;
}

/** An event in JSON form (the proxy's JSON catch-up, long-poll, `/latest`). */
export interface OriginEvent {
  id: EventId;
  channel: string;
  type: string;
  data: unknown;
  time: number;
}

/** The SSE event type of control events (origin and proxy): the stream could not be resumed
 * exactly, and the app should resync from a snapshot. Its frame carries no `id:`, so the
 * client's last event id stays where it was. */
export const RESET_TYPE = 'ssepush.reset';

/** The data of the origin's `ssepush.reset`: the cursor it was given is older than what its
 * retention still holds (or from another epoch of its log). */
export interface ResetData {
  reason: string;
  /** The cursor the client resumed from. */
  requestedId: EventId | null;
  /** The oldest event the origin still holds on the subscribed channels, if any. */
  oldestId: EventId | null;
}

/** The proxy's gap marker (a `ssepush.reset` frame in its SSE catch-up, `gap` in the JSON one):
 * its buffer cannot vouch that it holds every event after the requested position. The client
 * then ignores the buffer and resumes at the origin with its own cursor; the origin replays
 * what it still holds, or says `ssepush.reset` itself. */
export interface GapData {
  reason: string;
  /** `proxy`: the buffer overflowed or was acknowledged past the position; `origin`: the
   * origin reset the proxy's watch. */
  source: 'proxy' | 'origin';
  requestedId: EventId | null;
  throughId: EventId | null;
  oldestId: EventId | null;
}

/** `stream` of a handoff: what the proxy watches on the device's behalf. */
export interface StreamRequest {
  /** The origin's `GET /v1/sse?...` URL, without the position. */
  url: string;
  /** Request headers for the origin (credentials); hop-by-hop headers, `Accept` and
   * `Last-Event-ID` are refused. */
  headers?: Record<string, string>;
  /** The device's position; absent or null: from the moment the proxy connects. */
  lastEventId?: EventId | null;
}

/** A W3C `PushSubscription` in its JSON form (`subscription.toJSON()`), as browsers and
 * UnifiedPush distributors hand it out. */
export interface PushSubscriptionData {
  endpoint: string;
  expirationTime?: number | null;
  keys: {
    /** The browser's P-256 public key, base64url. */
    p256dh: string;
    /** The 16-byte authentication secret, base64url. */
    auth: string;
  };
}

/** APNs device token (64 hex digits) of a native or hybrid iOS app. */
export interface ApnsTarget {
  platform: 'apns';
  token: string;
  /** The app's bundle id, when the proxy serves several apps. */
  topic?: string;
  environment?: 'production' | 'sandbox' | 'development';
}

/** FCM registration token of an Android (or hybrid) app. */
export interface FcmTarget {
  platform: 'fcm';
  token: string;
}

/** A browser or PWA push subscription (RFC 8030 / RFC 8291 / RFC 8292). */
export interface WebPushTarget {
  platform: 'webpush';
  subscription: PushSubscriptionData;
}

/** `push` of a handoff: where the wake goes. */
export type PushTarget = ApnsTarget | FcmTarget | WebPushTarget;

/** `background` (silent, the default) or `alert` (shows the user a notification). */
export type WakeMode = 'background' | 'alert';

/** `wake` of a handoff: which events wake the device, and how often. */
export interface WakeOptions {
  /** CEL over `channel`, `type`, `id`, `data`: only matching events wake (all are buffered). */
  filter?: string;
  /** Events within this window after the first share one wake. */
  coalesceMs?: number;
  /** The device's hourly wake budget (the proxy caps it). */
  maxPerHour?: number;
  mode?: WakeMode;
}

/** `POST /v1/handoffs` body. */
export interface HandoffRequest {
  stream: StreamRequest;
  push: PushTarget;
  wake?: WakeOptions;
  /** How long the proxy watches at most, in seconds (the proxy caps it). */
  ttlSec?: number;
}

/** `201` answer to `POST /v1/handoffs`. */
export interface HandoffCreated {
  id: string;
  /** The device's secret for the handoff's other calls (`Authorization: Bearer`). */
  token: string;
  /** RFC 3339. */
  expiresAt: string;
}

/** A handoff's state on the proxy. */
export type HandoffState = 'watching' | 'woken' | 'expired' | 'failed' | 'closed';

/** The last wake a handoff sent. */
export interface LastWake {
  /** RFC 3339. */
  at: string;
  pending: number;
  latestEventId: EventId | null;
}

/** `GET /v1/handoffs/{id}`. */
export interface HandoffStatus {
  id: string;
  state: HandoffState;
  cursor: EventId | null;
  newestId: EventId | null;
  pending: number;
  wakesSent: number;
  lastWake: LastWake | null;
  lastError: string | null;
  expiresAt: string;
}

/** `GET /v1/handoffs/{id}/events` as JSON. */
export interface CatchUpJson {
  gap: GapData | null;
  events: OriginEvent[];
  cursor: EventId | null;
}

/** `DELETE /v1/handoffs/{id}`: the handback. */
export interface Handback {
  cursor: EventId | null;
  state: HandoffState;
}

/** The `ssepush` object of every wake (APNs and FCM carry it too). */
export interface WakePayload {
  handoff: string;
  /** Events buffered for the device since its cursor when the wake was sent. */
  pending: number;
  latestEventId: EventId | null;
}

/** The plaintext of a Web Push wake (after the browser decrypted it): the wake, and in alert
 * mode the notification to show. */
export interface WebPushMessage {
  ssepush: WakePayload;
  notification?: { title: string; body: string };
}

/** Every 4xx/5xx of the origin and the proxy. */
export interface ApiErrorBody {
  error: { code: string; message: string; [detail: string]: unknown };
}

/** JSON that does not have the shape a field of the protocol needs. */
export class WireError extends Error {
  override name = 'WireError';
}

type Json = Record<string, unknown>;

function object(v: unknown, what: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new WireError(`${what} is not a JSON object`);
  }
  return v as Json;
}

function string(o: Json, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== 'string') throw new WireError(`${what}.${key} is not a string`);
  return v;
}

function optionalId(o: Json, key: string, what: string): EventId | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'string') throw new WireError(`${what}.${key} is not a string or null`);
  return v;
}

function count(o: Json, key: string, what: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw new WireError(`${what}.${key} is not a non-negative integer`);
  }
  return v;
}

/** Checks a `201` answer to `POST /v1/handoffs`. */
export function parseHandoffCreated(v: unknown): HandoffCreated {
  const o = object(v, 'handoff answer');
  return {
    id: string(o, 'id', 'handoff answer'),
    token: string(o, 'token', 'handoff answer'),
    expiresAt: string(o, 'expiresAt', 'handoff answer'),
  };
}

/** Checks the `ssepush` object of a wake. */
export function parseWakePayload(v: unknown): WakePayload {
  const o = object(v, 'ssepush');
  return {
    handoff: string(o, 'handoff', 'ssepush'),
    pending: count(o, 'pending', 'ssepush'),
    latestEventId: optionalId(o, 'latestEventId', 'ssepush'),
  };
}

/** Reads a Web Push wake from the text the browser decrypted. Throws {@link WireError} on
 * anything that is not one (a push from another sender of the same service worker, say). */
export function parseWebPushMessage(text: string): WebPushMessage {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new WireError('the push payload is not JSON');
  }
  const o = object(v, 'push payload');
  const msg: WebPushMessage = { ssepush: parseWakePayload(o['ssepush']) };
  if (o['notification'] !== undefined && o['notification'] !== null) {
    const n = object(o['notification'], 'notification');
    msg.notification = {
      title: string(n, 'title', 'notification'),
      body: string(n, 'body', 'notification'),
    };
  }
  return msg;
}

/** Reads the data of an `ssepush.reset` frame, from the origin ({@link ResetData}) or the
 * proxy ({@link GapData}, which has the same fields and more). */
export function parseResetData(data: string): ResetData {
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    throw new WireError('ssepush.reset data is not JSON');
  }
  const o = object(v, 'ssepush.reset');
  return {
    reason: typeof o['reason'] === 'string' ? (o['reason'] as string) : '',
    requestedId: optionalId(o, 'requestedId', 'ssepush.reset'),
    oldestId: optionalId(o, 'oldestId', 'ssepush.reset'),
  };
}

/** Reads the data of an event frame ({@link Envelope}). */
export function parseEnvelope(data: string): Envelope {
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    throw new WireError('event data is not JSON');
  }
  const o = object(v, 'event data');
  const time = o['time'];
  if (typeof time !== 'number') throw new WireError('event data.time is not a number');
  return { channel: string(o, 'channel', 'event data'), data: o['data'], time };
}

/** The `error` of a 4xx/5xx body, if the body is one. */
export function parseApiError(v: unknown): ApiErrorBody['error'] | null {
  if (typeof v !== 'object' || v === null) return null;
  const e = (v as Json)['error'];
  if (typeof e !== 'object' || e === null) return null;
  const o = e as Json;
  if (typeof o['code'] !== 'string' || typeof o['message'] !== 'string') return null;
  return o as ApiErrorBody['error'];
}

/** The `push` object for a browser's subscription: takes a `PushSubscription` (its `toJSON()`)
 * or the JSON itself. */
export function webPushTarget(subscription: PushSubscriptionData | { toJSON(): unknown }): WebPushTarget {
  const raw: unknown =
    'toJSON' in subscription && typeof subscription.toJSON === 'function' ? subscription.toJSON() : subscription;
  const o = object(raw, 'subscription');
  const keys = object(o['keys'], 'subscription.keys');
  const exp = o['expirationTime'];
  return {
    platform: 'webpush',
    subscription: {
      endpoint: string(o, 'endpoint', 'subscription'),
      expirationTime: typeof exp === 'number' ? exp : null,
      keys: { p256dh: string(keys, 'p256dh', 'subscription.keys'), auth: string(keys, 'auth', 'subscription.keys') },
    },
  };
}
