// The package entry (load-addon.js): index.js's exports, loaded on first use, and the reason the
// addon cannot load here.
export * from './index.js'
/** Why the native addon cannot load on this platform (an Error whose message is one line, `code` its first word), or null; loads it. */
export declare function addonLoadError(): (Error & { code?: string }) | null
