// Node's etcd3 client (1.1) against raftkv: a lease (grant, a key under it,
// keep-alive, revoke), the client's lock (a second locker is refused while
// the first holds) and its election (campaign, leader, proclaim, resign, a
// second campaigner elected after). Run by tests/client_libraries.rs as
// `node leases.js URL URL` (two members). Prints `ok: ...` per check and
// exits non-zero on the first failure or if anything takes longer than 20 s.
'use strict';
const { Etcd3 } = require('etcd3');
const { check, fail } = require('./checks');

const [firstUrl, secondUrl] = process.argv.slice(2);
const a = new Etcd3({ hosts: [firstUrl] });
const b = new Etcd3({ hosts: [secondUrl] });
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

async function main() {
  const lease = a.lease(30, { autoKeepAlive: false });
  const id = await lease.grant();
  check(id.length > 0, 'a lease is granted');
  await lease.put('svc/js').value('up');
  check((await b.get('svc/js').string()) === 'up', 'the key under the lease is read through another member');
  const renewed = await lease.keepaliveOnce();
  check(Number(renewed.TTL) === 30, 'a keep-alive renews the full TTL');

  // Node's lock tries once: a second locker is refused while it is held.
  const first = a.lock('job');
  await first.acquire();
  check(true, 'the lock is acquired');
  const refused = await b.lock('job').acquire().then(() => false, e => e.constructor.name === 'EtcdLockFailedError');
  check(refused, 'a second locker is refused while it is held');
  await first.release();
  const second = b.lock('job');
  await second.acquire();
  check(true, 'the lock is acquired again once released');
  await second.release();

  const election = a.election('pick');
  const campaign = election.campaign('one');
  await campaign.wait();
  check((await b.election('pick').leader()) === 'one', 'the leader is seen through another member');
  await campaign.proclaim('two');
  check((await b.election('pick').leader()) === 'two', 'a proclaimed value is seen');
  const other = b.election('pick').campaign('three');
  let otherElected = false;
  other.on('elected', () => { otherElected = true; });
  await sleep(500);
  check(!otherElected, 'a second campaigner waits while the first leads');
  await campaign.resign();
  await other.wait();
  check((await a.election('pick').leader()) === 'three', 'the second campaigner leads after a resignation');
  await other.resign();

  await lease.revoke();
  check((await b.get('svc/js').string()) === null, 'revoking deletes the attached key');
  a.close();
  b.close();
  console.log('all passed');
}

main().catch(e => fail(`${e.stack || e}`));
