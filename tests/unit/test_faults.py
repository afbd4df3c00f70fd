"""The agent's fault points: a plain point kills, one with seconds holds."""

from unittest import mock

from livesnap import faults


def test_unarmed_point_does_nothing():
    with mock.patch('os.kill') as kill, mock.patch('time.sleep') as sleep:
        faults.point('create_snapshot', 'pivot', 'before',
                     armed=['create_snapshot:pivot:after',
                            'delete_snapshot:pivot:before:3'])
    assert not kill.called and not sleep.called


def test_point_kills_the_agent():
    with mock.patch('os.kill') as kill, mock.patch('time.sleep') as sleep:
        faults.point('create_snapshot', 'pivot', 'before',
                     armed=['create_snapshot:pivot:before'])
    assert kill.called and not sleep.called


def test_point_with_seconds_holds_instead():
    with mock.patch('os.kill') as kill, mock.patch('time.sleep') as sleep:
        faults.point('create_snapshot', 'pivot', 'before',
                     armed=['create_snapshot:pivot:before:2.5'])
    sleep.assert_called_once_with(2.5)
    assert not kill.called
