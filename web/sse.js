// Incremental parser for OpenAI-style server-sent events: feed text, get `data:` payloads back.
export class SseParser {
  constructor() { this.buffer = ""; }

  /** Returns the complete events' data strings found so far. */
  feed(text) {
    this.buffer += text.replace(/\r\n?/g, "\n");
    const events = [];
    let end;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
      if (data.length) events.push(data.join("\n"));
    }
    return events;
  }
}
