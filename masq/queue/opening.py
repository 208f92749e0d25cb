"""Open the spool's queue for a purpose: appending, reading, or running it.

Every command and the daemon open the queue the same way, from the configuration (spool
directory, volatile spool allowed or not, segment size). A spool that cannot be used
becomes exits.Failure with the SpoolError's status: 78 for a spool that cannot be trusted,
75 for a temporary problem.
"""

from masq.base import exits


def open_queue(cfg, mode, report=None, clock=None):
    """Return the spool Queue opened for mode ('append', 'read' or 'runner'); `clock`
    (the loop's) dates new message ids."""
    from masq.queue.spool import Queue, SpoolError
    main = cfg.main
    try:
        return Queue(main.spool_dir, volatile_ok=main.volatile_spool, report=report,
                     segment_size=main.queue_segment_size, clock=clock).open(mode)
    except SpoolError as exc:
        raise exits.Failure(str(exc), exc.status) from None
