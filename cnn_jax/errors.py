"""The one base class of every mistake a user can make at the command line.

Each entry point catches `UserError` and prints it as one `error:` line with
exit status 2 (`cli.fail`); anything else is a bug and keeps its traceback.
The subclasses live with the code that detects them: `validation.ConfigError`,
`records.FolderError`, `input_pipeline.DataError`, `sweep.SweepError`,
`report.ReportError`.
"""


class UserError(Exception):
  """Input the user can fix: a config value, a file, a folder, a sweep spec."""
