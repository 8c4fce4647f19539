// The web app's build: `npm run build` type-checks (tsc) and bundles into dist/
// (index.html and hashed assets/), which `sddsf web` serves.
import { defineConfig } from "vite";

export default defineConfig({
  base: "./",
  // @sddsf/client is ../ts (a symlink): its built dist/src. Its own imports of
  // yjs resolve here, so that the app and the library share ONE Yjs (two copies
  // would break Yjs's type checks and double the bundle).
  resolve: { dedupe: ["yjs"] },
  build: {
    target: "es2022",
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 2048,
    reportCompressedSize: true,
  },
});
