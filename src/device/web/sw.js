// The demo page's service worker: the web client's worker module, nothing else. It receives
// the Web Push wake, fetches what the proxy buffered and posts it to the page, and shows a
// notification while the page is hidden. It also takes wakes from the page itself (the demo's
// simulated push service relays them that way).
import { installSsePushWorker } from '/ssepush/sw.js';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

installSsePushWorker(self, {
  fetchEvents: true,
  acceptPageMessages: true,
  title: 'ssepush demo',
  url: '/',
});
