"""The log-structured queue: a message is durable once its COMMIT record is synced.

Layout: record.py (framing), log.py (the file and its append protocol), envelope.py
(payloads), store.py (the index and recovery of records), spool.py (the directory, locks,
recovery, compaction, and the writing helpers), memory.py (the same facade over segments in
RAM, for tests about other things). The format and the crash states are
written down in docs/QUEUE.md.
"""
