/**
 * HTTP/1.1 as the bytes on the wire: pipelined requests on one raw socket, and a strict parser
 * for the responses that come back, so a test sees exactly how each response is framed and
 * where the next one begins.
 */
import { connect } from 'node:net';

export interface WireResponse {
  status: number;
  statusLine: string;
  headers: Array<[name: string, value: string]>;
  body: Buffer;
  /** How the body's end was known. */
  framing: 'content-length' | 'chunked' | 'none';
}

export function headerValues(response: WireResponse, name: string): string[] {
  return response.headers.filter(([n]) => n === name).map(([, value]) => value);
}

/**
 * Parses as many complete responses as `bytes` holds. `bodiless[i]` says response i answers a
 * HEAD (no body whatever its headers say). A response with neither Content-Length nor chunked
 * framing on a keep-alive connection cannot be delimited: it ends the parse, as it would end
 * any client's.
 */
export function parseResponses(bytes: Buffer, bodiless: boolean[] = []): { responses: WireResponse[]; rest: Buffer } {
  const responses: WireResponse[] = [];
  let at = 0;
  for (;;) {
    const headEnd = bytes.indexOf('\r\n\r\n', at, 'latin1');
    if (headEnd === -1) break;
    const [statusLine = '', ...lines] = bytes.subarray(at, headEnd).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine)?.[1] ?? NaN);
    if (Number.isNaN(status)) throw new Error(`not a status line: ${JSON.stringify(statusLine.slice(0, 80))}`);
    const headers = lines.map((line): [string, string] => {
      const colon = line.indexOf(':');
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()];
    });
    const value = (name: string) => headers.find(([n]) => n === name)?.[1];
    let cursor = headEnd + 4;
    let body: Buffer;
    let framing: WireResponse['framing'];
    if (bodiless[responses.length] || status === 204 || status === 304) {
      body = Buffer.alloc(0);
      framing = 'none';
    } else if (/chunked/i.test(value('transfer-encoding') ?? '')) {
      const parts: Buffer[] = [];
      let complete = false;
      for (;;) {
        const lineEnd = bytes.indexOf('\r\n', cursor, 'latin1');
        if (lineEnd === -1) break;
        const size = parseInt(bytes.subarray(cursor, lineEnd).toString('latin1'), 16);
        if (Number.isNaN(size)) throw new Error(`bad chunk size at byte ${cursor}`);
        if (size === 0) {
          // No trailers are expected: the last chunk is followed by an empty line.
          if (bytes.length < lineEnd + 4) break;
          cursor = lineEnd + 4;
          complete = true;
          break;
        }
        if (bytes.length < lineEnd + 2 + size + 2) break;
        parts.push(bytes.subarray(lineEnd + 2, lineEnd + 2 + size));
        cursor = lineEnd + 2 + size + 2;
      }
      if (!complete) break;
      body = Buffer.concat(parts);
      framing = 'chunked';
    } else if (value('content-length') !== undefined) {
      const length = Number(value('content-length'));
      if (bytes.length < cursor + length) break;
      body = bytes.subarray(cursor, cursor + length);
      cursor += length;
      framing = 'content-length';
    } else {
      break;
    }
    responses.push({ status, statusLine, headers, body, framing });
    at = cursor;
  }
  return { responses, rest: bytes.subarray(at) };
}

/**
 * Writes `requests` (raw HTTP/1.1, pipelined) on one connection and reads until `expected`
 * responses have been parsed, the server closes, or `timeoutMs` passes.
 */
export function pipeline(port: number, requests: string[], expected: number, options: { timeoutMs?: number; bodiless?: boolean[] } = {}) {
  return new Promise<{ responses: WireResponse[]; rest: Buffer; raw: Buffer; closed: boolean }>((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    let closed = false;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(chunks);
      try {
        resolve({ ...parseResponses(raw, options.bodiless), raw, closed });
      } catch (error) {
        reject(error);
      }
    };
    const timer = setTimeout(finish, options.timeoutMs ?? 5000);
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      try {
        if (parseResponses(Buffer.concat(chunks), options.bodiless).responses.length >= expected) finish();
      } catch {
        finish(); // unparseable: finish() rejects with the parser's reason
      }
    });
    socket.on('close', () => {
      closed = true;
      finish();
    });
    socket.on('error', () => undefined);
    socket.on('connect', () => socket.write(requests.join('')));
  });
}

export function get(path: string, headers: string[] = [], method = 'GET'): string {
  return [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1', ...headers, '', ''].join('\r\n');
}
