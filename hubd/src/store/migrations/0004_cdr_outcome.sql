-- What the call bridge adds to a call's record (issue 6): the SIP side's
-- and the device's end causes, the recording's path and the media health
-- verdict, so a hub can answer "where is the recording of call X" and "which
-- calls had one-way audio" without parsing outbox payloads. The full detail
-- (levels per direction, RTP counters, AudioSocket session) stays in the
-- outbox payload.
ALTER TABLE cdrs ADD COLUMN sip_cause TEXT;
ALTER TABLE cdrs ADD COLUMN device_cause TEXT;
ALTER TABLE cdrs ADD COLUMN recording TEXT;
ALTER TABLE cdrs ADD COLUMN media_verdict TEXT;
