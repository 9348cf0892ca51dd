"""Dataset-scale work: the same batches in one process or sharded over Ray Data.

:mod:`.work` cuts the inputs into numbered batches and runs a *worker* (an
object holding one engine session, and for validation one reference) on each;
:mod:`.ray_data` runs the same workers as Ray Data actors, on a local cluster
or an existing one. Ray is optional (``pip install 'deployres[ray]'``) and is
imported only when ``--ray`` is asked for; :mod:`.options` says where the work runs
(:class:`~deploy_res.scale.options.RayOptions`).
"""
