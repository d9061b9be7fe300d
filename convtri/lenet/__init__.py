"""The ``convtri`` command's application: the chapter's LeNet trained on convtri's ops.

It uses the library (``convtri``) through its public names alone, and the library never
imports it. ``cli`` is the command (``convtri demo``, ``convtri lenet``), ``training`` the run,
``settings`` its recipes and checks, ``checkpoint`` what it saves, ``data`` the datasets,
``figures`` the plots, ``models`` the LeNet and its torch.nn twin, ``command`` what the
commands share."""
