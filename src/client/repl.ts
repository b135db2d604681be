/**
 * The interactive client: `main.ts -cli -i HOST -p PORT`. A REPL with history and help, or
 * one-shot use for scripts (`-e "get k"`). It speaks the memcached text protocol, so it works
 * against a controller or a plain memcached; `show` is mckv's extension.
 */

import readline from 'node:readline';
import { TextClient, type TextReply } from './text-client.ts';

export interface ClientOptions {
  host: string;
  port: number;
  /** Run these commands, print their results and exit (status 1 if any failed). */
  commands?: string[];
}

/** A command line the user typed, turned into protocol bytes; or a usage error. */
export type Parsed = { raw: string | Buffer; verb: string } | { usage: string };

const HELP = `commands (values with spaces go in double quotes; ttl in seconds, 0 = never):
  get KEY [KEY...]            gets KEY [KEY...]  (also shows cas tokens)
  set KEY VALUE [TTL]         add KEY VALUE [TTL]        replace KEY VALUE [TTL]
  append KEY VALUE            prepend KEY VALUE          cas KEY VALUE TOKEN [TTL]
  incr KEY N                  decr KEY N                 delete KEY
  touch KEY TTL               flush_all                  stats    version
  show [--json]               the cluster as this controller sees it (--json: one line of JSON)
  causal_token                (causal mode) a token naming this connection's causal context
  causal_wait TOKEN [MS]      (causal mode) wait, at most MS ms (default 5000), until this
                              controller has caught up with TOKEN from another one
  help                        quit`;

/** Runs the client; resolves to the process exit code. */
export async function runClient(options: ClientOptions): Promise<number> {
  let client: TextClient;
  try {
    client = await TextClient.connect(options.host, options.port);
  } catch (error) {
    process.stderr.write(`mckv: ${(error as Error).message}\n`);
    return 1;
  }
  try {
    if (options.commands && options.commands.length > 0) {
      let failed = false;
      for (const line of options.commands) {
        const ok = await runLine(client, line, (text) => process.stdout.write(`${text}\n`));
        failed ||= !ok;
      }
      return failed ? 1 : 0;
    }
    return await repl(client, options);
  } finally {
    client.close();
  }
}

async function repl(client: TextClient, options: ClientOptions): Promise<number> {
  const prompt = `mckv ${options.host}:${options.port}> `;
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, prompt, historySize: 1000 });
  process.stdout.write(`connected to ${options.host}:${options.port}; type help for commands\n`);
  rl.prompt();
  for await (const line of rl) {
    const trimmed = line.trim();
    if (trimmed === 'quit' || trimmed === 'exit') break;
    if (trimmed !== '') {
      try {
        await runLine(client, trimmed, (text) => process.stdout.write(`${text}\n`));
      } catch (error) {
        process.stdout.write(`error: ${(error as Error).message}\n`);
        if (!client.usable) {
          process.stdout.write('the connection cannot be used any more; start the client again\n');
          break;
        }
      }
    }
    rl.prompt();
  }
  rl.close();
  return 0;
}

/** Runs one command line; returns false when it was refused or failed. */
export async function runLine(client: TextClient, line: string, print: (text: string) => void): Promise<boolean> {
  const parsed = parseLine(line);
  if ('usage' in parsed) {
    print(parsed.usage);
    return parsed.usage === HELP;
  }
  const reply = await client.request(parsed.raw, parsed.verb);
  for (const text of formatReply(parsed.verb, reply)) print(text);
  const last = reply.lines[reply.lines.length - 1] ?? '';
  return !/^(ERROR|CLIENT_ERROR|SERVER_ERROR)/.test(last);
}

/** Turns a typed command into protocol bytes. Exported for tests. */
export function parseLine(line: string): Parsed {
  const words = tokenize(line);
  if ('usage' in words) return words;
  const [verb, ...args] = words;
  const lower = (verb ?? '').toLowerCase();
  const need = (count: number, usage: string): Parsed | null =>
    args.length < count ? { usage: `usage: ${usage}` } : null;
  switch (lower) {
    case 'help':
      return { usage: HELP };
    case 'get':
    case 'gets':
      return need(1, `${lower} KEY [KEY...]`) ?? { raw: `${lower} ${args.join(' ')}\r\n`, verb: lower };
    case 'set':
    case 'add':
    case 'replace':
    case 'append':
    case 'prepend': {
      const [key, value, ttl = '0'] = args;
      if (key === undefined || value === undefined) return { usage: `usage: ${lower} KEY VALUE [TTL]` };
      return storage(lower, key, value, ttl, null);
    }
    case 'cas': {
      const [key, value, token, ttl = '0'] = args;
      if (key === undefined || value === undefined || token === undefined) return { usage: 'usage: cas KEY VALUE TOKEN [TTL]' };
      return storage('cas', key, value, ttl, token);
    }
    case 'incr':
    case 'decr':
      return need(2, `${lower} KEY N`) ?? { raw: `${lower} ${args[0]} ${args[1]}\r\n`, verb: lower };
    case 'delete':
      return need(1, 'delete KEY') ?? { raw: `delete ${args[0]}\r\n`, verb: lower };
    case 'touch':
      return need(2, 'touch KEY TTL') ?? { raw: `touch ${args[0]} ${args[1]}\r\n`, verb: lower };
    case 'show':
      if (args.length > 1 || (args.length === 1 && args[0] !== '--json' && args[0] !== 'json')) return { usage: 'usage: show [--json]' };
      return { raw: args.length === 1 ? 'show json\r\n' : 'show\r\n', verb: lower };
    case 'flush_all':
    case 'stats':
    case 'version':
    case 'causal_token':
      return { raw: `${[lower, ...args].join(' ')}\r\n`, verb: lower };
    case 'causal_wait':
      return need(1, 'causal_wait TOKEN [MS]') ?? { raw: `${[lower, ...args].join(' ')}\r\n`, verb: lower };
    default:
      return { usage: `unknown command '${verb}'; type help for the list` };
  }
}

function storage(verb: string, key: string, value: string, ttl: string, token: string | null): Parsed {
  if (!/^-?\d+$/.test(ttl)) return { usage: `ttl must be a whole number of seconds, not '${ttl}'` };
  if (token !== null && !/^\d+$/.test(token)) return { usage: `cas token must be a number, not '${token}'` };
  const bytes = Buffer.from(value, 'utf8');
  const header = `${verb} ${key} 0 ${ttl} ${bytes.length}${token === null ? '' : ` ${token}`}\r\n`;
  return { raw: Buffer.concat([Buffer.from(header, 'utf8'), bytes, Buffer.from('\r\n')]), verb };
}

function tokenize(line: string): string[] | { usage: string } {
  const words: string[] = [];
  const pattern = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  let match: RegExpExecArray | null;
  let consumed = 0;
  while ((match = pattern.exec(line)) !== null) {
    const [, quoted, bare] = match;
    if (quoted !== undefined) words.push(quoted.replace(/\\(.)/g, '$1'));
    else if (bare !== undefined) words.push(bare);
    consumed = pattern.lastIndex;
  }
  if (line.slice(consumed).includes('"') || (line.match(/(?<!\\)"/g)?.length ?? 0) % 2 === 1) {
    return { usage: 'unbalanced double quote' };
  }
  return words;
}

function formatReply(verb: string, reply: TextReply): string[] {
  if (verb === 'get' || verb === 'gets') {
    const last = reply.lines.at(-1);
    if (last !== 'END') return last === undefined ? [] : [last];
    if (reply.values.length === 0) return ['(not found)'];
    return reply.values.map((item) => {
      const cas = item.cas === null ? '' : ` cas=${item.cas}`;
      const flags = item.flags === 0 ? '' : ` flags=${item.flags}`;
      return `${item.key} = ${item.value.toString('utf8')}${flags}${cas}`;
    });
  }
  if (verb === 'show' || verb === 'stats' || verb === 'causal_token') return reply.lines.filter((line) => line !== 'END');
  return reply.lines;
}
