# The sample function: Kubeless' Python runtime loads this file as module "hello" and calls
# handler(event, context) once per Kafka record that ktrigger forwards.


def handler(event, context):
    # event['data'] is the record value (a dict when it is a JSON object); event['event-id']
    # is topic/partition/offset, stable across redeliveries.
    print('%s: %r' % (event['event-id'], event['data']), flush=True)
    return 'OK'
