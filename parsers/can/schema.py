"""DDL of every table the CAN parsers fill (one place, so all CAN parsers declare the same
set and the case creates them whichever CAN file comes first). Timestamps are UTC, microseconds.
"""

# payload + dlc back to the data bytes (remote frames carry none)
PAYLOAD_SQL = (
    "coalesce(payload_blob, CASE WHEN flags & 2 <> 0 THEN ''::BLOB "
    "ELSE unhex(lpad(hex(payload), 2 * dlc, '0')) END)"
)

TABLES = {
    # The big table (tens of millions of rows) stores the payload as an integer: a BLOB
    # column costs DuckDB 2.5x the insert time of all the other columns together. Read
    # frames through the `can_frames` view, which gives the payload back as bytes.
    "can_frame_store": """CREATE TABLE IF NOT EXISTS can_frame_store (
        file_id INTEGER,
        loc BIGINT,              -- line number (text formats) or object number (BLF, MF4)
        ts TIMESTAMP,            -- UTC, microseconds
        channel VARCHAR,         -- as the log names it: can0, 1, ...
        arbitration_id UINTEGER, -- 11 or 29 bit id; for error frames the error class bits
        flags UTINYINT,          -- 1 ext, 2 remote, 4 error, 8 FD, 16 BRS, 32 ESI, 64 Tx
        dlc UTINYINT,            -- data length in bytes (requested length for remote frames)
        payload UBIGINT,         -- the data bytes big-endian (first byte most significant);
                                 -- as many bytes as dlc says (none for remote frames)
        payload_blob BLOB)       -- the data when payload cannot say it (FD over 8 bytes, or a
                                 -- length other than dlc's); NULL otherwise""",
    "can_frames": f"""CREATE VIEW IF NOT EXISTS can_frames AS
        SELECT file_id, loc, ts, channel, arbitration_id, flags, dlc, {PAYLOAD_SQL} AS data
        FROM can_frame_store""",
    "can_errors": """CREATE TABLE IF NOT EXISTS can_errors (
        file_id INTEGER, loc BIGINT, locator VARCHAR,
        ts TIMESTAMP, channel VARCHAR,
        source VARCHAR,          -- error_frame | status | counters | driver
        classes VARCHAR[],       -- error.h classes: controller, protocol, ack, bus_off, ...
        controller VARCHAR[],    -- rx_warning, tx_passive, ... (or PEAK bus_light/heavy)
        protocol VARCHAR[],      -- bit, form, stuff, bit0, bit1, overload, active, tx
        location VARCHAR,        -- ack_slot, crc_sequence, ... (error.h data[3])
        transceiver VARCHAR,
        tx_errors SMALLINT, rx_errors SMALLINT,
        state VARCHAR,           -- error_active | error_warning | error_passive | bus_off | restarted
        text VARCHAR)            -- the format's own words for it, when it has some""",
    "can_logs": """CREATE TABLE IF NOT EXISTS can_logs (
        file_id INTEGER, charger_id VARCHAR, format VARCHAR,
        loc_unit VARCHAR,        -- line | frame
        time_basis VARCHAR,      -- absolute | header_date | anchored_manifest | anchored_case | relative
        anchor TIMESTAMP,        -- what relative offsets were added to (NULL if absolute)
        ts_first TIMESTAMP, ts_last TIMESTAMP,
        frames BIGINT, error_frames BIGINT, bitrate INTEGER,
        note VARCHAR)""",
    "can_bus_stats": """CREATE TABLE IF NOT EXISTS can_bus_stats (
        file_id INTEGER, channel VARCHAR,
        second TIMESTAMP,         -- start of the one-second bucket, UTC
        frames BIGINT,            -- data and remote frames
        error_frames BIGINT,
        err_protocol BIGINT, err_ack BIGINT, err_controller BIGINT, err_bus_off BIGINT,
        bits BIGINT,              -- nominal frame bits without stuffing (SOF..IFS)
        load_pct DOUBLE)          -- bits / bitrate * 100; NULL when the bitrate is unknown""",
    "can_modules": """CREATE TABLE IF NOT EXISTS can_modules (
        file_id INTEGER, module VARCHAR,
        source VARCHAR,           -- manifest | dbc | canopen
        arbitration_ids UINTEGER[],
        period_ms DOUBLE,         -- configured, DBC cycle time, or observed median period
        tolerance_ms DOUBLE,      -- a silence longer than this is module.offline
        frames BIGINT, ts_first TIMESTAMP, ts_last TIMESTAMP, gaps INTEGER)""",
    "dbc_files": """CREATE TABLE IF NOT EXISTS dbc_files (
        file_id INTEGER, name VARCHAR, messages INTEGER, signals INTEGER,
        text VARCHAR)             -- the DBC itself, so log parsers can decode with it""",
    "dbc_messages": """CREATE TABLE IF NOT EXISTS dbc_messages (
        file_id INTEGER, frame_id UINTEGER, is_extended BOOLEAN, name VARCHAR,
        length INTEGER, senders VARCHAR[], cycle_time_ms INTEGER, comment VARCHAR,
        locator VARCHAR)""",
    "dbc_signals": """CREATE TABLE IF NOT EXISTS dbc_signals (
        file_id INTEGER, frame_id UINTEGER, message VARCHAR, signal VARCHAR,
        start_bit INTEGER, length INTEGER, byte_order VARCHAR, is_signed BOOLEAN,
        scale DOUBLE, "offset" DOUBLE, unit VARCHAR, choices JSON, locator VARCHAR)""",
    "can_signals": """CREATE TABLE IF NOT EXISTS can_signals (
        file_id INTEGER, loc BIGINT, locator VARCHAR,
        ts TIMESTAMP, channel VARCHAR, arbitration_id UINTEGER,
        message VARCHAR, signal VARCHAR,
        value DOUBLE,             -- physical value (scale and offset applied)
        text VARCHAR)             -- the value's DBC choice name, when it has one
        -- only the first value and each change per (channel, message, signal) are kept""",
    "firmware_versions": """CREATE TABLE IF NOT EXISTS firmware_versions (
        file_id INTEGER, charger_id VARCHAR,
        component VARCHAR,        -- DBC sender node or message (PM1, PM2, ...)
        version VARCHAR,
        source VARCHAR,           -- can_dbc | ...
        ts_first TIMESTAMP, ts_last TIMESTAMP, frames BIGINT, locator VARCHAR)""",
}
