// What the client scripts share: `check` prints `ok: ...` or fails, and
// `fail` prints `FAILED: ...` and exits non-zero; a script that runs longer
// than 90 s fails (a bound against hanging, not a speed check: on a loaded
// machine these scripts have needed close to 20 s).
'use strict';

function fail(what) {
  console.log(`FAILED: ${what}`);
  process.exit(1);
}

function check(cond, what) {
  if (!cond) fail(what);
  console.log(`ok: ${what}`);
}

setTimeout(() => fail('timed out'), 90000).unref();

module.exports = { check, fail };
