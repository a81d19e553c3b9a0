# stop embedding for a while (writes keep queueing rows), then go on
# 暂停一段时间（写入仍会把行排入队列），然后继续
embedq vectorize pause songs_vec
embedq vectorize resume songs_vec

# after fixing what made the table refuse some rows: give parked rows a fresh budget
# 修复导致某些行被拒绝的问题后：让被搁置的行重新尝试
embedq vectorize resume songs_vec --retry-parked

# unbind: the trigger goes, the vectors stay (add --drop-columns to drop them too)
# 解除绑定：触发器删除，向量保留（加 --drop-columns 则一并删除）
embedq vectorize drop songs_vec
