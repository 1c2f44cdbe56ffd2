// Incremental parser for server-sent events: feed text, get back each complete event's `id` and `data`.
export class SseParser {
  constructor() { this.buffer = ""; this.cr = ""; }

  /** The complete events found so far, as {id, data}: `id` is the event's `id:` field (null without one). */
  feed(text) {
    const raw = this.cr + text;
    this.cr = raw.endsWith("\r") ? "\r" : "";  // maybe the first half of a CRLF split across reads
    this.buffer += raw.slice(0, raw.length - this.cr.length).replace(/\r\n?/g, "\n");
    const events = [];
    let end;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const lines = this.buffer.slice(0, end).split("\n");
      this.buffer = this.buffer.slice(end + 2);
      const field = (name) => lines.filter((l) => l.startsWith(`${name}:`)).map((l) => l.slice(name.length + 1).replace(/^ /, ""));
      const data = field("data");
      if (data.length) events.push({ id: field("id").at(-1) ?? null, data: data.join("\n") });
    }
    return events;
  }
}

/** Characters as the gateway counts them (Unicode code points: event ids and Last-Event-ID use this unit). */
export const codePoints = (text) => [...text].length;
