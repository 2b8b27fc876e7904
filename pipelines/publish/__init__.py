"""Publishers: copy run records from the local store to InfluxDB and BigQuery.

The local record is written first and stays the source of truth; each publisher is idempotent
(sending a run twice creates no duplicates) and raises PublishError with a clear message.
"""


class PublishError(RuntimeError):
  pass
