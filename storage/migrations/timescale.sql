-- TimescaleDB: readings and scores become hypertables with one-day chunks, compressed
-- after 7 days (segments per device, newest first). Retention is applied by
-- storage.maintenance from CITYWATCH_RETENTION_DAYS, so changing it needs no migration.
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day',
                         migrate_data => true, if_not_exists => true);
SELECT create_hypertable('scores', 'ts', chunk_time_interval => INTERVAL '1 day',
                         migrate_data => true, if_not_exists => true);

ALTER TABLE readings SET (timescaledb.compress,
                          timescaledb.compress_segmentby = 'device_id',
                          timescaledb.compress_orderby = 'ts DESC');
ALTER TABLE scores SET (timescaledb.compress,
                        timescaledb.compress_segmentby = 'device_id, model_version',
                        timescaledb.compress_orderby = 'ts DESC');
SELECT add_compression_policy('readings', INTERVAL '7 days', if_not_exists => true);
SELECT add_compression_policy('scores', INTERVAL '7 days', if_not_exists => true);
