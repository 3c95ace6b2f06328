// A minimal W3C WebDriver client (what tauri-driver speaks), on Node's fetch:
// enough to find, click, type, read text and take screenshots.
import { inflateSync } from 'node:zlib';

// The W3C web element identifier.
const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';

export class WebDriver {
  constructor(base) {
    this.base = base;
    this.session = null;
  }

  async call(method, path, body) {
    const response = await fetch(`${this.base}${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await response.json();
    if (!response.ok) {
      throw new Error(`WebDriver ${method} ${path}: ${response.status} ${JSON.stringify(json.value ?? json)}`);
    }
    return json.value;
  }

  async start(capabilities) {
    const value = await this.call('POST', '/session', { capabilities: { alwaysMatch: capabilities } });
    this.session = value.sessionId;
  }

  async quit() {
    if (this.session) await this.call('DELETE', `/session/${this.session}`).catch(() => {});
    this.session = null;
  }

  s(path) {
    return `/session/${this.session}${path}`;
  }

  /** The first element matching `css`, or null. */
  async find(css) {
    const found = await this.call('POST', this.s('/elements'), { using: 'css selector', value: css });
    return found.length ? found[0][ELEMENT] : null;
  }

  async findAll(css) {
    const found = await this.call('POST', this.s('/elements'), { using: 'css selector', value: css });
    return found.map((e) => e[ELEMENT]);
  }

  async text(css) {
    const id = await this.find(css);
    if (!id) throw new Error(`no element ${css}`);
    return this.call('GET', this.s(`/element/${id}/text`));
  }

  async textOf(id) {
    return this.call('GET', this.s(`/element/${id}/text`));
  }

  async click(css) {
    const id = await this.find(css);
    if (!id) throw new Error(`no element ${css}`);
    await this.call('POST', this.s(`/element/${id}/click`), {});
  }

  async clickElement(id) {
    await this.call('POST', this.s(`/element/${id}/click`), {});
  }

  async type(css, text) {
    const id = await this.find(css);
    if (!id) throw new Error(`no element ${css}`);
    await this.call('POST', this.s(`/element/${id}/clear`), {});
    await this.call('POST', this.s(`/element/${id}/value`), { text });
  }

  async script(source, ...args) {
    return this.call('POST', this.s('/execute/sync'), { script: source, args });
  }

  /** Runs `source` in the page; it ends by calling its last argument with the result. */
  async asyncScript(source, ...args) {
    return this.call('POST', this.s('/execute/async'), { script: source, args });
  }

  async screenshot() {
    return Buffer.from(await this.call('GET', this.s('/screenshot')), 'base64');
  }

  /** Polls `check` until it returns a truthy value; throws `what` after `ms`. */
  async until(what, check, ms = 20000) {
    const deadline = Date.now() + ms;
    let last;
    for (;;) {
      try {
        last = await check();
        if (last) return last;
      } catch (error) {
        last = error.message;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
      await new Promise((r) => setTimeout(r, 150));
    }
  }
}

/**
 * Decodes an 8-bit RGB/RGBA PNG and says how much is drawn on it: the share of
 * pixels that differ from the most common colour, and the number of colours.
 */
export function pngInk(png) {
  let offset = 8;
  let width = 0, height = 0, colorType = 0;
  const idat = [];
  while (offset < png.length) {
    const length = png.readUInt32BE(offset);
    const type = png.toString('ascii', offset + 4, offset + 8);
    const data = png.subarray(offset + 8, offset + 8 + length);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      if (data[8] !== 8) throw new Error('only 8-bit PNGs');
      colorType = data[9];
    } else if (type === 'IDAT') idat.push(data);
    offset += 12 + length;
  }
  const channels = colorType === 6 ? 4 : colorType === 2 ? 3 : 0;
  if (!channels) throw new Error(`unsupported PNG colour type ${colorType}`);
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const pixels = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? pixels[y * stride + x - channels] : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + x] : 0;
      const c = x >= channels && y > 0 ? pixels[(y - 1) * stride + x - channels] : 0;
      let value = line[x];
      if (filter === 1) value += a;
      else if (filter === 2) value += b;
      else if (filter === 3) value += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        value += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      pixels[y * stride + x] = value & 0xff;
    }
  }
  const counts = new Map();
  for (let i = 0; i < pixels.length; i += channels) {
    const key = (pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2];
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const total = width * height;
  const commonest = Math.max(...counts.values());
  return { width, height, colours: counts.size, inked: 1 - commonest / total };
}
