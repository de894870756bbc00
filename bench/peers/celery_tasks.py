"""celery_tasks.py - the Celery app of the bench (Redis broker and result backend from env)."""
import os

from celery import Celery

import common

_port = os.environ["BENCH_CELERY_REDIS_PORT"]
app = Celery("bench", broker=f"redis://127.0.0.1:{_port}/0", backend=f"redis://127.0.0.1:{_port}/1")
app.conf.update(task_default_queue="bench", worker_prefetch_multiplier=4, result_expires=600,
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task
def noop(*args):
    return common.noop(*args)


@app.task
def true_cmd(*args):
    return common.true_cmd(*args)


@app.task
def inc(x, sleep):
    return common.inc(x, sleep)


@app.task
def dec(x, sleep):
    return common.dec(x, sleep)


@app.task
def add(xy, sleep):
    return common.add(xy[0], xy[1], sleep)


@app.task
def command(x, y, cmd, sleep, n):
    # the diamond's inc/dec/add as sluice runs them: the flow's argv (cmd), integer stdout
    return common.command_body(x, y, command=cmd, sleep=sleep, n=n)


@app.task
def add_command(xy, cmd, sleep, n):
    return common.command_body(xy[0], xy[1], command=cmd, sleep=sleep, n=n)


@app.task
def total(values):
    return sum(values)
