package zone

// Bulk import of records into the zone's store: POST /v1/import reads
// NDJSON, one record a line, and applies it in chunks, each one atomic
// transaction. See docs/PROTOCOL.md, "Data endpoints".
