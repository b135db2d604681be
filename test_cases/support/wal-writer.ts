/**
 * A child process for wal-disk-full.test.ts: appends records to a write-ahead file until the disk
 * refuses one (the test runs it under a file size limit), printing `ok N` once record N is
 * written and synced, then `refused CODE`; with `compact`, writes three records and then tries to
 * compact to one larger than the limit; with `background`, appends through the controller's
 * background writer, two records a batch, printing `ok N` for each record of a batch once it is
 * done; `inline` the same with batches that need no fsync (written on the event loop).
 *
 *   node --import tsx test_cases/support/wal-writer.ts FILE append|compact|background|inline
 */

import { BackgroundWriteAhead } from '../../src/controller/wal-background.ts';
import type { WalWriteResult } from '../../src/controller/durability.ts';
import { WriteAheadFile } from '../../src/wal.ts';

// Past the file size limit the kernel sends SIGXFSZ, which would kill the process; ignored, the
// write fails with EFBIG instead, as one fails with ENOSPC on a full disk.
process.on('SIGXFSZ', () => {});

const [file, mode] = process.argv.slice(2);
if (file === undefined) throw new Error('usage: wal-writer.ts FILE append|compact|background|inline');
const record = (index: number, bytes: number): unknown => ({ index, pad: Buffer.alloc(bytes, 0x61) });
if (mode === 'background' || mode === 'inline') {
  const writeAhead = new BackgroundWriteAhead({ file, owner: { clusterId: 'mckv', nodeId: 'n1' }, fsyncDelayFile: null });
  for (let index = 0; index < 10_000; index += 2) {
    const records = [index, index + 1].map((each) => ({ record: record(each, 1000), compact: false }));
    const result = await new Promise<WalWriteResult>((resolve) => writeAhead.write({ records, sync: mode === 'background' }, resolve));
    if (!result.ok) {
      console.log(`refused ${result.error.code}`);
      break;
    }
    console.log(`ok ${index}\nok ${index + 1}`);
  }
  writeAhead.close();
  await writeAhead.whenClosed();
  process.exit(0);
}
const wal = new WriteAheadFile(file, { clusterId: 'mckv', nodeId: 'n1' });
try {
  if (mode === 'compact') {
    for (let index = 0; index < 3; index++) wal.append(record(index, 100));
    console.log('ok 2');
    wal.compact(record(99, 1 << 20));
    console.log('ok compacted');
  } else {
    for (let index = 0; index < 10_000; index++) {
      wal.append(record(index, 1000));
      console.log(`ok ${index}`);
    }
  }
} catch (error) {
  console.log(`refused ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
}
wal.close();
