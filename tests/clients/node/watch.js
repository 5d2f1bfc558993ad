// Node's etcd3 client (1.1) against raftkv: put, get, watch a key and a
// prefix, replay from a start revision, prev_kv, cancel, and a compacted
// start revision. Run by tests/client_libraries.rs as
// `node watch.js URL URL` (writes through the first member, watches on the
// second). Prints `ok: ...` per check and exits non-zero on the first
// failure or if anything takes longer than 20 s.
'use strict';
const { Etcd3 } = require('etcd3');
const { check, fail } = require('./checks');

const [writerUrl, watcherUrl] = process.argv.slice(2);
const writer = new Etcd3({ hosts: [writerUrl] });
const watcher = new Etcd3({ hosts: [watcherUrl] });
/** The next `n` events of `w`, as [type, key, value, mod_revision, prev value]. */
function events(w, n) {
  return new Promise(resolve => {
    const seen = [];
    const add = type => (kv, prev) => {
      seen.push([type, kv.key.toString(), kv.value.toString(), Number(kv.mod_revision), prev ? prev.value.toString() : null]);
      if (seen.length === n) resolve(seen);
    };
    w.on('put', add('put'));
    w.on('delete', add('delete'));
  });
}

async function main() {
  const first = Number((await writer.put('js/a').value('1').exec()).header.revision);
  await writer.put('js/b').value('2');
  await writer.delete().key('js/a');
  check((await watcher.get('js/b').string()) === '2', 'get through another member');

  // A prefix from a past revision, with previous values.
  const history = await watcher.watch().prefix('js/').startRevision(String(first)).withPreviousKV().create();
  const replayed = await events(history, 3);
  check(
    JSON.stringify(replayed) ===
      JSON.stringify([
        ['put', 'js/a', '1', first, null],
        ['put', 'js/b', '2', first + 1, null],
        ['delete', 'js/a', '', first + 2, '1'],
      ]),
    `a prefix watch replays history with prev_kv: ${JSON.stringify(replayed)}`,
  );
  await history.cancel();

  // A key from now on; then cancelled.
  const live = await watcher.watch().key('js/live').create();
  const next = events(live, 1);
  await writer.put('js/other').value('x');
  await writer.put('js/live').value('now');
  const got = await next;
  check(got.length === 1 && got[0][1] === 'js/live' && got[0][2] === 'now', 'a live put reaches a key watcher');
  await live.cancel();
  check(true, 'cancel');

  // A start revision below the compaction point: an error, not a retry loop.
  const now = Number((await writer.put('js/c').value('3').exec()).header.revision);
  await writer.kv.compact({ revision: String(now), physical: true });
  const compacted = await new Promise(resolve => {
    watcher
      .watch()
      .prefix('js/')
      .startRevision(String(first))
      .create()
      .then(w => {
        w.on('error', e => resolve(String(e)));
        w.on('put', kv => resolve(`an event: ${kv.key}`));
      }, e => resolve(String(e)));
  });
  check(/compacted/.test(compacted), `a compacted start revision is an error: ${compacted}`);

  writer.close();
  watcher.close();
  console.log('all passed');
  process.exit(0);
}

main().catch(e => fail(String(e && e.stack ? e.stack : e)));
