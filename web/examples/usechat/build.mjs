// Bundle the example with esbuild from npm (no CDN): dist/index.html + dist/app.js (+ dist/probe.js for the CORS test).
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";

const here = new URL(".", import.meta.url).pathname;
await mkdir(`${here}dist`, { recursive: true });
await build({
  entryPoints: { app: `${here}src/app.jsx`, probe: `${here}src/cors-probe.js` },
  outdir: `${here}dist`,
  bundle: true,
  format: "esm",
  minify: true,
  sourcemap: false,
  target: ["chrome120", "firefox120", "safari17"],
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
});
await copyFile(`${here}index.html`, `${here}dist/index.html`);
console.log("built dist/index.html, dist/app.js, dist/probe.js");
