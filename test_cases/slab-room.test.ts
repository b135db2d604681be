/**
 * Room for items of a size in memcached, from its slab statistics: the item's own class counts,
 * never a neighbour's; a class holding no page yet has only free pages; big items count bytes.
 * The stats fixtures are what memcached 1.6.18 (-m 8 -M) answers.
 */

import { describe, expect, it } from 'vitest';
import { slabStateOf } from '../src/store/memcached.ts';
import { itemRoom, slabClassSizes, storedItemBytes, type SlabState } from '../src/store/slab-room.ts';

const MB = 1024 * 1024;

/** memcached 1.6.18's default classes, as `memcached -vv` prints them. */
const DEFAULT_CLASSES = [
  96, 120, 152, 192, 240, 304, 384, 480, 600, 752, 944, 1184, 1480, 1856, 2320, 2904, 3632, 4544, 5680, 7104, 8880, 11104, 13880,
  17352, 21696, 27120, 33904, 42384, 52984, 66232, 82792, 103496, 129376, 161720, 202152, 252696, 315872, 394840, 524288,
];

function state(freePages: number, classes: SlabState['classes'], classSizes: number[] | null = DEFAULT_CLASSES): SlabState {
  return { pageBytes: MB, freePages, chunkMaxBytes: 512 * 1024, classes, classSizes };
}

describe('slabClassSizes', () => {
  it('is memcached\'s own table, for the defaults and for -f 2 -n 72', () => {
    expect(slabClassSizes(48, 1.25, 524_288)).toEqual(DEFAULT_CLASSES);
    expect(slabClassSizes(72, 2, 524_288)).toEqual([120, 240, 480, 960, 1920, 3840, 7680, 15360, 30720, 61440, 122880, 245760, 524288]);
  });
});

describe('itemRoom', () => {
  it('counts the free chunks of the item\'s class and the free pages that class could take', () => {
    const slabs = state(3, [{ id: 4, chunkBytes: 192, freeChunks: 100 }, { id: 5, chunkBytes: 240, freeChunks: 7 }]);
    expect(itemRoom(slabs, 180)).toEqual({ label: 'class:4', items: 100 + 3 * Math.floor(MB / 192), perPage: Math.floor(MB / 192) });
    expect(itemRoom(slabs, 200)).toEqual({ label: 'class:5', items: 7 + 3 * Math.floor(MB / 240), perPage: Math.floor(MB / 240) });
  });

  it('after small items were deleted, a larger item finds no room although bytes are free', () => {
    // Memory full of class-3 pages, all of their chunks free again; no page left to give.
    const calcified = state(0, [{ id: 3, chunkBytes: 152, freeChunks: 50_000 }]);
    expect(itemRoom(calcified, 4000)).toMatchObject({ label: 'class:18', items: 0 });
    expect(itemRoom(calcified, 140)).toMatchObject({ label: 'class:3', items: 50_000 });
  });

  it('never counts a listed class when a smaller, unlisted class is the item\'s', () => {
    // Class 10 (752 bytes) holds pages; class 9 (600) does not: a 550-byte item goes there.
    const slabs = state(0, [{ id: 10, chunkBytes: 752, freeChunks: 1000 }]);
    expect(itemRoom(slabs, 550)).toMatchObject({ label: 'class:9', items: 0 });
    expect(itemRoom(slabs, 601)).toMatchObject({ label: 'class:10', items: 1000 });
  });

  it('a table that stops short of the item (only a peer could report one) is not trusted: counts stay numbers', () => {
    const slabs = state(0, [{ id: 9, chunkBytes: 600, freeChunks: 5 }], [96, 120, 152]);
    const room = itemRoom(slabs, 550);
    expect(Number.isFinite(room.items)).toBe(true);
    expect(room.items).toBe(0); // class 9's lower neighbour is unknown: no room counted
  });

  it('without memcached\'s table, counts a listed class only when the class below it is listed too', () => {
    const classes = [
      { id: 9, chunkBytes: 600, freeChunks: 5 },
      { id: 10, chunkBytes: 752, freeChunks: 1000 },
      { id: 14, chunkBytes: 1856, freeChunks: 70 },
    ];
    const slabs = state(0, classes, null);
    expect(itemRoom(slabs, 700)).toMatchObject({ label: 'class:10', items: 1000 });
    expect(itemRoom(slabs, 1700).items).toBe(0); // class 14's lower neighbour is unknown
  });

  it('takes the smaller room when the item may be 4 bytes larger (memcached\'s flags) and cross a class', () => {
    const slabs = state(0, [{ id: 4, chunkBytes: 192, freeChunks: 500 }, { id: 5, chunkBytes: 240, freeChunks: 2 }]);
    expect(itemRoom(slabs, 190)).toMatchObject({ label: 'class:5', items: 2 });
  });

  it('counts bytes for items larger than the largest chunk', () => {
    const slabs = state(2, [{ id: 39, chunkBytes: 512 * 1024, freeChunks: 1 }]);
    expect(itemRoom(slabs, 600 * 1024)).toMatchObject({ label: 'chunked', items: Math.floor((512 * 1024 + 2 * MB) / (600 * 1024 + 4)) });
  });
});

describe('storedItemBytes', () => {
  it('is what memcached allocates for our entry: its header, ours, the key and the value', () => {
    // Measured: our 100-byte value under "k1" is a 124-byte memcached value in the 192-byte class.
    expect(storedItemBytes('k1', 100)).toBe(48 + 8 + 1 + 2 + 2 + 24 + 100);
    // A key memcached cannot take as is is percent-encoded (one byte becomes three).
    expect(storedItemBytes('a b', 10)).toBe(storedItemBytes('abc', 10) + 2);
  });
});

describe('slabStateOf', () => {
  const stats = { limit_maxbytes: String(8 * MB), slab_global_page_pool: '1' };
  const slabs = {
    '1:chunk_size': '96', '1:chunks_per_page': '10922', '1:total_pages': '1', '1:free_chunks': '10921',
    '17:chunk_size': '3632', '17:chunks_per_page': '288', '17:total_pages': '1', '17:free_chunks': '287',
    active_slabs: '2', total_malloced: String(3 * MB),
  };

  it('reads the classes, the page size and the free pages (never handed out, plus the global pool)', () => {
    expect(slabStateOf(stats, slabs, { growthFactor: 1.25, chunkMaxBytes: 524_288, minChunkBytes: 48 })).toEqual({
      pageBytes: MB,
      freePages: 5 + 1,
      chunkMaxBytes: 524_288,
      classes: [{ id: 1, chunkBytes: 96, freeChunks: 10921 }, { id: 17, chunkBytes: 3632, freeChunks: 287 }],
      classSizes: DEFAULT_CLASSES,
    });
  });

  it('has no class table when the listed classes do not match memcached\'s (other -o slab_sizes)', () => {
    const odd = { ...slabs, '17:chunk_size': '4000' };
    expect(slabStateOf(stats, odd, { growthFactor: 1.25, chunkMaxBytes: 524_288, minChunkBytes: 48 })?.classSizes).toBeNull();
  });

  it('is null when memcached did not say enough', () => {
    expect(slabStateOf({}, slabs, { growthFactor: 1.25, chunkMaxBytes: 524_288, minChunkBytes: 48 })).toBeNull();
    expect(slabStateOf(stats, { '1:chunk_size': '96', total_malloced: String(MB) }, { growthFactor: 1.25, chunkMaxBytes: 524_288, minChunkBytes: 48 })).toBeNull();
  });
});
