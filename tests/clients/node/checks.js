// What the client scripts share: `check` prints `ok: ...` or fails, and
// `fail` prints `FAILED: ...` and exits non-zero; a script that runs longer
// than 20 s fails.
'use strict';

function fail(what) {
  console.log(`FAILED: ${what}`);
  process.exit(1);
}

function check(cond, what) {
  if (!cond) fail(what);
  console.log(`ok: ${what}`);
}

setTimeout(() => fail('timed out'), 20000).unref();

module.exports = { check, fail };
