"""Safety: the small guards every layer may use. The one redactor of every output
(redaction), atomic writes (atomic), where the API key may go (baseurl), NaN and infinities
refused where they enter (finite), every file read on a file's behalf kept in its folder
(suitefiles).

May import: errors.
"""
