"""Demo function: prints the event it received (the runtime's log shows it) and echoes it."""
import sys


def handler(event, context):
    data = event['data']
    print('hello.handler got %r (event-id %s, event-type %s)'
          % (data, event['event-id'], event['event-type']), flush=True)
    sys.stdout.flush()
    return data
