/** The pure FastCGI codec: constants, records, name-value pairs, the incremental decoder. */
export * from './protocol.js';
export * from './records.js';
export * from './name-value.js';
export * from './decoder.js';
