/* global process, console */
// mckv needs Node.js 20.15 or newer (zlib.crc32 came in 20.15). Run before anything else of ours
// (startup.sh, `npm test`, main.ts), so an older Node stops here with one clear line rather than
// with a SyntaxError from deep inside an import.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 20 || (major === 20 && minor < 15)) {
  console.error(
    `mckv needs Node.js 20.15 or newer; this is ${process.version} (${process.execPath}). ` +
      'Debian 12 and Ubuntu 24.04 package Node.js 18: install a current Node.js from nodejs.org or NodeSource.',
  );
  process.exit(1);
}
