// The sample page of `ssepush demo --web`: SsePushSource from the web client, a service worker
// for the wake, and a view of what happens. Query parameters: `channel`, and `push`:
// `simulated` (the demo's simulated push service, the default when there is one), `browser`
// (a real PushManager subscription) or `manual` (wait for `ssepushDemo.start(subscription)`).
import { SsePushSource, parseEnvelope, parseResetData, webPushTarget } from '/ssepush/index.js';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
let source = null;
let config = null;
let registration = null;

function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $('log').prepend(li);
  while ($('log').children.length > 200) $('log').lastChild.remove();
}

function render() {
  const state = $('state');
  const phase = source ? source.phase : state.dataset.phase;
  state.dataset.phase = phase;
  state.dataset.lastEventId = source ? source.lastEventId : '';
  state.dataset.handoff = (source && source.handoffId) || '';
  $('phase').textContent = phase;
  $('position').textContent = state.dataset.lastEventId || '–';
  $('handoff').textContent = state.dataset.handoff || '–';
}

function setPhase(phase) {
  $('state').dataset.phase = phase;
  render();
}

function addEvent(e) {
  const li = document.createElement('li');
  li.className = 'event';
  li.dataset.id = e.lastEventId;
  li.dataset.type = e.type;
  li.dataset.via = e.via;
  const via = document.createElement('span');
  via.className = 'via';
  via.textContent = e.via;
  const channel = document.createElement('span');
  channel.className = 'channel';
  const data = document.createElement('span');
  data.className = 'data';
  try {
    const env = parseEnvelope(e.data);
    channel.textContent = env.channel;
    li.dataset.channel = env.channel;
    data.textContent = JSON.stringify(env.data);
  } catch {
    data.textContent = JSON.stringify(e.data);
  }
  li.append(via, ' ', e.lastEventId, ' ', channel, ' ', data);
  $('events').append(li);
}

function addReset(e) {
  const li = document.createElement('li');
  li.className = 'reset';
  try {
    const r = parseResetData(e.data);
    li.dataset.oldest = r.oldestId ?? '';
    li.dataset.requested = r.requestedId ?? '';
    li.textContent = `ssepush.reset — events were lost after ${r.requestedId}; the origin holds from ${r.oldestId ?? 'nothing'}. (An app would resync from a snapshot here.)`;
  } catch {
    li.textContent = `ssepush.reset ${e.data}`;
  }
  $('events').append(li);
}

/** Starts streaming, handing off to the proxy with `subscription` (a PushSubscription JSON). */
function start(subscription) {
  if (source) source.close();
  const channel = params.get('channel') || config.channel;
  const url = `${config.origin}/v1/sse?channel=${encodeURIComponent(channel)}`;
  source = new SsePushSource(url, {
    proxy: {
      url: config.proxy,
      push: webPushTarget(subscription),
      wake: { coalesceMs: 100, maxPerHour: 60 },
      ttlSec: 3600,
    },
  });
  source.addEventListener('phasechange', () => {
    render();
    log(`phase: ${source.phase}${source.handoffId ? ` (handoff ${source.handoffId})` : ''}`);
  });
  source.addEventListener('message', (e) => {
    addEvent(e);
    render();
  });
  source.addEventListener('ssepush.reset', (e) => {
    addReset(e);
    render();
  });
  source.addEventListener('error', (e) => log(`stream: ${e.reason}`));
  source.addEventListener('handofferror', (e) => log(`handoff refused: ${e.reason}`));
  for (const id of ['publish', 'handoff-now', 'take-back']) $(id).disabled = false;
  render();
}

async function publish() {
  const channel = params.get('channel') || config.channel;
  const resp = await fetch(`${config.origin}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ channel, data: { text: $('text').value, at: new Date().toISOString() } }),
  });
  if (!resp.ok) log(`publish failed: HTTP ${resp.status}`);
}

/** The demo's simulated push service: its decrypted wakes go to the service worker, which
 * handles them exactly like a `push` event. */
async function simulated() {
  const resp = await fetch('/demo/subscriptions', { method: 'POST' });
  if (!resp.ok) throw new Error(`cannot get a simulated subscription: HTTP ${resp.status}`);
  const { subscription, wakes } = await resp.json();
  const relay = new EventSource(wakes);
  relay.addEventListener('push', (e) => {
    log('wake from the (simulated) push service');
    registration.active?.postMessage({ type: 'ssepush.push', data: e.data });
  });
  $('push-mode').textContent = 'push: simulated push service (offline demo)';
  start(subscription);
}

async function browserPush() {
  $('push-mode').textContent = 'push: this browser\'s push service';
  const button = $('enable-push');
  button.hidden = false;
  button.addEventListener('click', async () => {
    try {
      if ((await Notification.requestPermission()) !== 'granted') throw new Error('notifications were not allowed');
      const sub = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: config.vapidPublicKey,
      });
      button.hidden = true;
      start(sub.toJSON());
    } catch (e) {
      log(`cannot subscribe: ${e.message}`);
    }
  });
}

async function main() {
  config = await (await fetch('/demo/config.json')).json();
  registration = await navigator.serviceWorker.register('/sw.js', { type: 'module', scope: '/' });
  await navigator.serviceWorker.ready;
  $('state').dataset.worker = 'ready';
  navigator.serviceWorker.addEventListener('message', (e) => {
    if (e.data && typeof e.data.type === 'string') log(`service worker: ${e.data.type}`);
  });
  $('publish').addEventListener('click', () => void publish());
  $('handoff-now').addEventListener('click', () => source?.handOff());
  $('take-back').addEventListener('click', () => source?.resume());
  window.ssepushDemo = { start, get source() { return source; } };
  const mode = params.get('push') || (config.simulatedPush ? 'simulated' : 'browser');
  if (mode === 'manual') {
    setPhase('waiting for a subscription');
    $('push-mode').textContent = 'push: manual (ssepushDemo.start(subscription))';
  } else if (mode === 'simulated') {
    await simulated();
  } else {
    await browserPush();
  }
}

main().catch((e) => {
  log(`failed: ${e.message}`);
  setPhase('failed');
});
