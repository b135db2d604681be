/* global process */
// Preload (`node --import ./trace-imports.mjs …`) that appends the URL of every module the process
// imports, one a line, to the file named by MCKV_TRACE_IMPORTS: how build.test.ts sees which modules
// a command loads. The hooks run on Node's loader thread (trace-imports-hooks.mjs).
import { register } from 'node:module';

register('./trace-imports-hooks.mjs', import.meta.url, { data: { file: process.env.MCKV_TRACE_IMPORTS } });
