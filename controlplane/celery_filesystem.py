"""kombu's filesystem transport with atomic message files, creating its folders when it opens.

The stock transport creates the message file and then writes it, so a worker polling the folder
can pick up an empty file and fail to decode it. Writing to a hidden temporary name and renaming
it into place makes a message appear whole or not at all.
"""

import os
import tempfile
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def __init__(self, connection, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(connection, **kwargs)
        # Created here, where the broker first needs them, not when the settings are read.
        for folder in (self.data_folder_in, self.data_folder_out, self.processed_folder, self.control_folder):
            os.makedirs(folder, exist_ok=True)

    def _put(self, queue, payload, **kwargs):  # type: ignore[no-untyped-def]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        target = os.path.join(self.data_folder_out, name)
        try:
            # The temporary name has no ".<queue>.msg" suffix, so consumers skip it.
            handle, temporary = tempfile.mkstemp(prefix=".incoming-", dir=self.data_folder_out)
            with os.fdopen(handle, "wb") as stream:
                stream.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, target)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {target!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
