"""Lines of an input list as Beam's text reader splits them (the launcher reads local lists
once, before a run; the streaming feed publishes them one message a line)."""


def split_lines(data: bytes) -> list[bytes]:
  """Lines as Beam's text reader splits them: on \\n and \\r\\n only (not on U+2028, form
  feeds or other characters str.splitlines() treats as line ends)."""
  lines = data.split(b"\n")
  if lines and lines[-1] == b"":
    lines.pop()
  return [line[:-1] if line.endswith(b"\r") else line for line in lines]
