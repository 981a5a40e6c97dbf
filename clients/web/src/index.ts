/**
 * `@ssepush/web`: stream from an ssepush origin in a browser, hand the stream to the push proxy
 * while the page sleeps, and resume exactly when it returns. The service-worker half is the
 * separate entry point `@ssepush/web/sw`.
 *
 * @module
 */

export {
  SsePushSource,
  SsePushEvent,
  SsePushErrorEvent,
  readWorkerMessage,
  stripPosition,
  withPosition,
  type ProxyOptions,
  type SsePushSourceInit,
  type WorkerMessage,
} from './source.js';
export { EventStreamParser, EventTooLarge, parseEventStream, DEFAULT_MAX_EVENT_SIZE, type Block, type Parsed } from './parser.js';
export { reconnectDelay, parseRetryAfter, DEFAULT_BACKOFF, type BackoffPolicy } from './backoff.js';
export {
  start,
  step,
  readyStateOf,
  DEFAULT_RETRY_MS,
  type Command,
  type Delivery,
  type Handoff,
  type Input,
  type MachineOptions,
  type Phase,
  type State,
  type Step,
  type Via,
} from './machine.js';
export { createHandoff, catchUp, handBack, ProxyError, type Fetch } from './proxy.js';
export * from './wire.js';
