# one command
python -m pip install -i https://mirrors.aliyun.com/pypi/simple/ -e ".[demo]"
# or for every pip command of this user
python -m pip config set global.index-url https://pypi.tuna.tsinghua.edu.cn/simple
