"""Classes shared by copy2_sender.py and copy2_receiver.py.

The two sides use different classes that only agree on count(): SenderPond
keeps frogs and toads apart, but getStateToCopy sends just their total;
ReceiverPond keeps that total. Registering the pair here means that merely
importing this module lets SenderPonds into a process as ReceiverPonds.
"""
import pbgreen as pb


class FrogPond:
    def __init__(self, numFrogs, numToads):
        self.numFrogs = numFrogs
        self.numToads = numToads

    def count(self):
        return self.numFrogs + self.numToads


class SenderPond(FrogPond, pb.Copyable):
    def getStateToCopy(self):
        state = self.__dict__.copy()
        state["frogsAndToads"] = state.pop("numFrogs") + state.pop("numToads")
        return state


class ReceiverPond(pb.RemoteCopy):
    def setCopyableState(self, state):
        self.__dict__ = state

    def count(self):
        return self.frogsAndToads


pb.setUnjellyableForClass(SenderPond, ReceiverPond)
